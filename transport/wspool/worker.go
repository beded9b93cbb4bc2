package wspool

// The worker pool: each worker takes connections with work from the run
// queue and runs their job. The job's socket calls are in sys_*.go.

// maxPasses bounds the passes one job makes before it goes to the back of
// the run queue, so a busy connection cannot hold a worker.
const maxPasses = 8

// work is a pool worker: it runs the connections of the run queue, a batch
// at a time, until Close.
func (s *Server) work() {
	w := newWorker()
	batch := make([]*Conn, 0, runBatch)
	for {
		batch = s.runq.take(batch[:0])
		if len(batch) == 0 {
			return
		}
		for i, c := range batch {
			c.run(w)
			batch[i] = nil
		}
	}
}

// run is the job: it takes the bits, works, and returns when none are left.
func (c *Conn) run(w *worker) {
	for pass := 0; ; pass++ {
		bits := c.state.Swap(stSched) &^ stSched
		if bits == 0 {
			if c.state.CompareAndSwap(stSched, 0) {
				return
			}
			continue
		}
		if pass == maxPasses {
			c.state.Or(bits)
			c.s.runq.push(c)
			return
		}
		if !c.process(w, bits) {
			return
		}
	}
}

// worker holds one pool goroutine's scratch buffers, reused for every job.
type worker struct {
	bufs [][]byte
	iov  iovecs // writev's vector (sys_*.go)
	rbuf []byte
	sse  [][]byte // the frames of one Pull while they are rendered as SSE
}

func newWorker() *worker {
	return &worker{bufs: make([][]byte, 0, 256), iov: newIovecs(), rbuf: make([]byte, 8<<10)}
}

package wspool

import "sync"

// runBatch is the most connections a worker takes from the run queue at
// once: enough that a broadcast to 10k connections costs the workers a few
// hundred lock acquisitions instead of one channel receive each, small
// enough that an idle worker is not left waiting while another holds a long
// batch.
const runBatch = 8

// runQueue is the workers' FIFO of connections with work. A connection is
// in it at most once (stSched), so it never holds more than the open
// connections; it grows as needed and a push never blocks.
//
// A broadcast pushes every recipient in the order it woke them, so the
// first woken are written first. A push is a short critical section; an
// idle worker is signalled only when no signal is already on its way to
// one, so waking 10k connections costs at most one goroutine wakeup per
// worker, not one per connection.
type runQueue struct {
	mu       sync.Mutex
	cond     sync.Cond
	ring     []*Conn // len is a power of two; guarded by mu
	head     int     // guarded by mu
	n        int     // guarded by mu
	sleeping int     // workers waiting and not yet signalled; guarded by mu
	stopped  bool    // guarded by mu
}

func newRunQueue() *runQueue {
	q := &runQueue{ring: make([]*Conn, 256)}
	q.cond.L = &q.mu
	return q
}

func (q *runQueue) push(c *Conn) {
	q.mu.Lock()
	if q.n == len(q.ring) {
		q.grow()
	}
	q.ring[(q.head+q.n)&(len(q.ring)-1)] = c
	q.n++
	if q.sleeping > 0 {
		q.sleeping--
		q.cond.Signal()
	}
	q.mu.Unlock()
}

func (q *runQueue) grow() {
	ring := make([]*Conn, 2*len(q.ring))
	for i := 0; i < q.n; i++ {
		ring[i] = q.ring[(q.head+i)&(len(q.ring)-1)]
	}
	q.ring, q.head = ring, 0
}

// take waits for work and appends up to runBatch connections to batch, in
// queue order; of a small backlog it takes half and leaves the rest for
// another worker. It returns batch unchanged once stopped.
func (q *runQueue) take(batch []*Conn) []*Conn {
	q.mu.Lock()
	for q.n == 0 || q.stopped {
		if q.stopped {
			q.mu.Unlock()
			return batch
		}
		q.sleeping++
		q.cond.Wait()
	}
	k := min(runBatch, (q.n+1)/2)
	mask := len(q.ring) - 1
	for range k {
		batch = append(batch, q.ring[q.head])
		q.ring[q.head] = nil
		q.head = (q.head + 1) & mask
	}
	q.n -= k
	if q.n > 0 && q.sleeping > 0 {
		// The rest is for an idle worker rather than for our next take.
		q.sleeping--
		q.cond.Signal()
	}
	q.mu.Unlock()
	return batch
}

// stop makes every take return empty. Connections still queued, or pushed
// later by a late Wake, are never run: only Close stops the queue, after
// every connection was torn down or given up on.
func (q *runQueue) stop() {
	q.mu.Lock()
	q.stopped = true
	q.sleeping = 0
	q.cond.Broadcast()
	q.mu.Unlock()
}

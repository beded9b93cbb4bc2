//go:build linux

package wspool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/bridge"
)

// hub is a broadcast log for benchmarks: one publisher appends shared
// frames; every connection's source is a cursor into it, like the core's
// replay window.
type hub struct {
	frames [][]byte // preallocated; never reallocated
	n      atomic.Int64
}

func (h *hub) publish(f []byte) {
	i := h.n.Load()
	h.frames[i] = f
	h.n.Store(i + 1)
}

type cursorSource struct {
	h   *hub
	pos int64
}

func (s *cursorSource) Pull(bufs [][]byte, maxBytes int) [][]byte {
	end := s.h.n.Load()
	n := 0
	for s.pos < end && (n == 0 || n < maxBytes) {
		f := s.h.frames[s.pos]
		bufs = append(bufs, f)
		n += len(f)
		s.pos++
	}
	return bufs
}

func (s *cursorSource) Closed() {}

// benchServer starts a pool whose every connection reads the same hub.
func benchServer(tb testing.TB, h *hub, mod func(*Config)) (*Server, func() []*Conn) {
	var mu sync.Mutex
	var conns []*Conn
	cfg := Config{
		Listen:         "127.0.0.1:0",
		Auth:           NewNoneAuthenticator(),
		ValidateName:   bridge.ValidateName,
		MaxConnections: 30000,
		Accept: func(r *Request) (Source, error) {
			mu.Lock()
			conns = append(conns, r.Conn)
			mu.Unlock()
			return &cursorSource{h: h, pos: h.n.Load()}, nil
		},
	}
	cfg.Workers = envInt("NB_WORKERS", 0)
	if mod != nil {
		mod(&cfg)
	}
	s := startServer(tb, cfg)
	return s, func() []*Conn {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(conns)
	}
}

// BenchmarkDeliver measures wake + pull + writev: one op is one broadcast of
// a shared 200-byte frame to 100 loopback connections whose readers discard
// what they get.
func BenchmarkDeliver(b *testing.B) {
	const nconn = 100
	h := &hub{frames: make([][]byte, b.N+1)}
	s, conns := benchServer(b, h, nil)
	frame := textFrame(strings.Repeat("x", 200-4))
	var received atomic.Int64
	var wg sync.WaitGroup
	var clients []net.Conn
	for i := 0; i < nconn; i++ {
		c := mustDial(b, s.Addr().String(), "/ws?user=u"+strconv.Itoa(i))
		clients = append(clients, c.nc)
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := c.br.Read(buf)
				received.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
	}
	eventually(b, 5*time.Second, func() error {
		if n := len(conns()); n != nconn {
			return fmt.Errorf("%d conns", n)
		}
		return nil
	})
	all := conns()
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.publish(frame)
		for _, c := range all {
			c.Wake()
		}
	}
	want := int64(b.N) * int64(len(frame)) * nconn
	eventually(b, 60*time.Second, func() error {
		if r := received.Load(); r < want {
			return fmt.Errorf("received %d of %d bytes", r, want)
		}
		return nil
	})
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	deliveries := float64(b.N) * nconn
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/deliveries, "allocs/delivery")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	for _, c := range clients {
		c.Close()
	}
	wg.Wait()
}

// The tests below are the numbers of docs/benchmarks-wspool.md. They need
// NB_BENCH=1; the clients run in a child process (this test binary
// re-executed) so the server's RSS is its own.

func benchEnabled(t *testing.T) {
	if os.Getenv("NB_BENCH") != "1" {
		t.Skip("set NB_BENCH=1")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// benchChild starts the client process with n connections to addr and
// waits until they are all open.
type benchChild struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startChild(t *testing.T, addr string, n int, env ...string) *benchChild {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchClientHelper$", "-test.v=false")
	cmd.Env = append(os.Environ(), "NB_BENCH_CLIENT="+addr, "NB_CONNS="+strconv.Itoa(n))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &benchChild{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	if line := c.ask(t, ""); line != "ready" {
		t.Fatalf("child: %q", line)
	}
	return c
}

// ask sends a command line (none when empty) and returns the answer line.
func (c *benchChild) ask(t *testing.T, cmd string) string {
	if cmd != "" {
		fmt.Fprintln(c.in, cmd)
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	return strings.TrimSpace(line)
}

func TestIdleMemory(t *testing.T) {
	benchEnabled(t)
	n := envInt("NB_CONNS", 10000)
	h := &hub{frames: make([][]byte, 16)}
	s, _ := benchServer(t, h, nil)
	time.Sleep(200 * time.Millisecond) // let the pool's goroutines settle before the baseline
	runtime.GC()
	debug.FreeOSMemory()
	rss0, g0 := rssBytes(), runtime.NumGoroutine()
	child := startChild(t, s.Addr().String(), n)
	eventually(t, 60*time.Second, func() error {
		if s.Conns() != n {
			return fmt.Errorf("%d conns", s.Conns())
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	rss1, g1 := rssBytes(), runtime.NumGoroutine()
	runtime.GC()
	debug.FreeOSMemory()
	rss2 := rssBytes()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("conns=%d rss_before=%.1fMiB rss_after=%.1fMiB (%.0f B/conn) after_gc_free=%.1fMiB (%.0f B/conn) heap_inuse=%.1fMiB goroutines %d -> %d",
		n, mib(rss0), mib(rss1), float64(rss1-rss0)/float64(n), mib(rss2), float64(rss2-rss0)/float64(n), mib(int64(ms.HeapInuse)), g0, g1)
	_ = child
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func childCPU(t *testing.T, c *benchChild, before string) time.Duration {
	b, _ := strconv.ParseInt(before, 10, 64)
	a, _ := strconv.ParseInt(c.ask(t, "cpu"), 10, 64)
	return time.Duration(a - b)
}

func perDelivery(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

// dialNoRead opens a WebSocket with a 4 KiB receive buffer and never reads
// past the handshake response.
func dialNoRead(t testing.TB, addr, target string) net.Conn {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", target)
	return nc
}

// TestSlowClient: 200 reading clients, then the same with one client that
// never reads; broadcasts of 1 KB at full speed. The slow one must be
// closed after write_timeout while the others get everything.
func TestSlowClient(t *testing.T) {
	benchEnabled(t)
	k := envInt("NB_BURST", 20000)
	wt := 2 * time.Second
	h := &hub{frames: make([][]byte, 2*k+1)}
	var slowAt atomic.Int64
	hooks := &slowHooks{at: &slowAt}
	s, conns := benchServer(t, h, func(c *Config) { c.WriteTimeout = wt; c.Hooks = hooks })
	child := startChild(t, s.Addr().String(), 200)
	phase := func(name string) {
		all := conns()
		child.ask(t, "reset")
		start := time.Now()
		for i := 0; i < k; i++ {
			p := fmt.Appendf(nil, `{"t":%d,"pad":"`, time.Now().UnixNano())
			p = append(p, strings.Repeat("p", 1000-len(p)-2)...)
			p = append(p, `"}`...)
			h.publish(textFrame(string(p)))
			for _, c := range all {
				c.Wake()
			}
		}
		want := strconv.Itoa(k * 200)
		eventually(t, 120*time.Second, func() error {
			if got := child.ask(t, "count"); got != want {
				return fmt.Errorf("delivered %s of %s", got, want)
			}
			return nil
		})
		t.Logf("%s: %d x 1 KB to 200 readers in %v: %s", name, k, time.Since(start).Round(time.Millisecond), child.ask(t, "stats"))
	}
	eventually(t, 30*time.Second, func() error {
		if n := len(conns()); n != 200 {
			return fmt.Errorf("%d conns", n)
		}
		return nil
	})
	phase("without the slow client")
	startChild(t, s.Addr().String(), 1, "NB_NOREAD=1")
	eventually(t, 30*time.Second, func() error {
		if n := len(conns()); n != 201 {
			return fmt.Errorf("%d conns", n)
		}
		return nil
	})
	start := time.Now()
	phase("with the slow client   ")
	eventually(t, 3*wt+10*time.Second, func() error {
		if slowAt.Load() == 0 {
			return errors.New("slow client not closed")
		}
		return nil
	})
	eventually(t, 5*time.Second, func() error {
		if n := s.Conns(); n != 200 {
			return fmt.Errorf("%d conns", n)
		}
		return nil
	})
	t.Logf("slow client closed %v after the burst started (write_timeout %v); the 200 readers stay open",
		(time.Duration(slowAt.Load() - start.UnixNano())).Round(time.Millisecond), wt)
}

type slowHooks struct {
	nopHooks
	at *atomic.Int64
}

func (h *slowHooks) SlowClosed(string) { h.at.CompareAndSwap(0, time.Now().UnixNano()) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func TestFanout(t *testing.T) {
	benchEnabled(t)
	n := envInt("NB_CONNS", 10000)
	secs := envInt("NB_SECONDS", 10)
	h := &hub{frames: make([][]byte, 200000)}
	s, conns := benchServer(t, h, nil)
	child := startChild(t, s.Addr().String(), n)
	eventually(t, 60*time.Second, func() error {
		if s.Conns() != n {
			return fmt.Errorf("%d conns", s.Conns())
		}
		return nil
	})
	all := conns()
	broadcast := func() {
		p := fmt.Appendf(nil, `{"t":%d,"pad":"`, time.Now().UnixNano())
		p = append(p, strings.Repeat("p", 200-len(p)-2)...)
		p = append(p, `"}`...)
		h.publish(textFrame(string(p)))
		for _, c := range all {
			c.Wake()
		}
	}
	// (a) 20 broadcasts/s.
	child.ask(t, "reset")
	cpu0, ccpu0 := cpuTime(), child.ask(t, "cpu")
	tick := time.NewTicker(50 * time.Millisecond)
	for i := 0; i < 20*secs; i++ {
		<-tick.C
		broadcast()
	}
	tick.Stop()
	time.Sleep(500 * time.Millisecond)
	// Every frame must have arrived, or the quantiles would leave out the
	// slowest (and a lost frame would go unnoticed).
	wantA := strconv.Itoa(20 * secs * n)
	eventually(t, 60*time.Second, func() error {
		if got := child.ask(t, "count"); got != wantA {
			return fmt.Errorf("delivered %s of %s", got, wantA)
		}
		return nil
	})
	// CPU first: sorting the samples for stats is not delivery work.
	scpu, ccpu := perDelivery(cpuTime()-cpu0, 20*secs*n), perDelivery(childCPU(t, child, ccpu0), 20*secs*n)
	statsA := child.ask(t, "stats")
	t.Logf("(a) 20/s x %ds, %d clients: %s; server CPU %.2fµs/delivery, client CPU %.2fµs/delivery",
		secs, n, statsA, scpu, ccpu)
	if strings.Contains(statsA, "ENDED") {
		t.Fatal("client connections ended during the run")
	}

	// (b) as fast as the publisher can wake everyone, K broadcasts.
	k := envInt("NB_BURST", 1000)
	child.ask(t, "reset")
	cpu0, ccpu0 = cpuTime(), child.ask(t, "cpu")
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	for i := 0; i < k; i++ {
		broadcast()
	}
	pub := time.Since(start)
	want := strconv.Itoa(k * n)
	var last string
	eventually(t, 120*time.Second, func() error {
		last = child.ask(t, "count")
		if last != want {
			return fmt.Errorf("delivered %s of %s", last, want)
		}
		return nil
	})
	el := time.Since(start)
	runtime.ReadMemStats(&ms1)
	scpu, ccpu = perDelivery(cpuTime()-cpu0, k*n), perDelivery(childCPU(t, child, ccpu0), k*n)
	statsB := child.ask(t, "stats")
	t.Logf("(b) %d broadcasts x %d clients in %v (publish %v): %.0f deliveries/s, no loss; %.3f allocs/delivery; server CPU %.2fµs/delivery, client CPU %.2fµs/delivery; %s",
		k, n, el.Round(time.Millisecond), pub.Round(time.Millisecond), float64(k*n)/el.Seconds(),
		float64(ms1.Mallocs-ms0.Mallocs)/float64(k*n), scpu, ccpu, statsB)
	if strings.Contains(statsB, "ENDED") {
		t.Fatal("client connections ended during the run")
	}
}

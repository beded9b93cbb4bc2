package bench

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// metricsSnapshot is what bench reads from the bridge's /metrics.
type metricsSnapshot struct {
	rss, heap, goroutines, backfillReads, slowCloses int64
	cpu                                              float64
}

func scrape(adminURL string) (metricsSnapshot, error) {
	var s metricsSnapshot
	if adminURL == "" {
		return s, nil
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(adminURL + "/metrics")
	if err != nil {
		return s, fmt.Errorf("scrape %s/metrics: %w", adminURL, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		if strings.HasPrefix(name, "notifybridge_slow_client_closes_total{") {
			s.slowCloses += int64(f) // summed over causes
		}
		switch name {
		case "process_resident_memory_bytes":
			s.rss = int64(f)
		case "go_memstats_heap_inuse_bytes":
			s.heap = int64(f)
		case "notifybridge_backfill_reads_total":
			s.backfillReads = int64(f)
		case "go_goroutines":
			s.goroutines = int64(f)
		case "process_cpu_seconds_total":
			s.cpu = f
		}
	}
	return s, sc.Err()
}

func (r *runner) fillProcess(base, after metricsSnapshot) {
	r.res.RSSBaseBytes, r.res.RSSBytes = base.rss, after.rss
	r.res.GoroutinesBase, r.res.Goroutines = base.goroutines, after.goroutines
	r.res.CPUSeconds = after.cpu - base.cpu
	r.res.BackfillReads = after.backfillReads - base.backfillReads
	r.res.SlowClosed = after.slowCloses - base.slowCloses
	if r.o.Clients > 0 {
		r.res.RSSPerConnBytes = float64(after.rss-base.rss) / float64(r.o.Clients)
		r.res.HeapPerConn = float64(after.heap-base.heap) / float64(r.o.Clients)
	}
}

// point is one timeline sample: the clients' progress and the bridge's
// process metrics, four times a second, for the plots.
type point struct {
	AtS        float64 `json:"t"`
	Connected  int     `json:"connected"`
	CaughtUp   int     `json:"caught_up"`
	Received   int64   `json:"received"`
	Reconnects int64   `json:"reconnects,omitempty"` // cumulative
	RSSBytes   int64   `json:"rss_bytes,omitempty"`
	Goroutines int64   `json:"goroutines,omitempty"`
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	SlowClosed int64   `json:"slow_closed,omitempty"` // cumulative, since the bridge started
}

// sample records the timeline until stop is closed.
func (r *runner) sample(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := false
	for {
		st := r.status()
		p := point{AtS: time.Since(r.t0).Seconds(), Connected: st.Connected, CaughtUp: st.CaughtUp, Received: st.Received, Reconnects: st.Reconnects}
		if m, err := scrape(r.o.AdminURL); err == nil {
			p.RSSBytes, p.Goroutines, p.CPUSeconds, p.SlowClosed = m.rss, m.goroutines, m.cpu, m.slowCloses
		}
		r.res.Timeline = append(r.res.Timeline, p)
		if last {
			return
		}
		select {
		case <-stop:
			last = true // one more point: the state the run ended in
		case <-tick.C:
		}
	}
}

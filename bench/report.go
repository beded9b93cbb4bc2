package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
)

// summarizeLatency turns the merged histogram and reservoirs into the
// result's percentiles, report buckets and chart points.
func (r *runner) summarizeLatency() {
	res := r.res
	h := &res.hist
	res.LatencySamples = h.N
	if h.N == 0 {
		return
	}
	res.P50ms, res.P90ms, res.P99ms = h.quantile(.50), h.quantile(.90), h.quantile(.99)
	res.MaxMs = float64(h.MaxUS) / 1000
	bounds := []float64{0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, math.Inf(1)}
	for i, c := range h.coarse(bounds) {
		b := bounds[i]
		if math.IsInf(b, 1) {
			b = -1 // JSON has no infinity: -1 means "above"
		}
		res.Histogram = append(res.Histogram, bucketCount{UpToMs: b, Count: c})
	}
	// The chart: every process's uniform reservoir, in time order, thinned
	// to at most 5000 points.
	s := res.rawSamples
	sort.Slice(s, func(i, j int) bool { return s[i].AtUS < s[j].AtUS })
	origin := r.origin.UnixMicro()
	if r.origin.IsZero() && len(s) > 0 {
		origin = s[0].AtUS
	}
	step := max(1, len(s)/5000)
	for i := 0; i < len(s); i += step {
		res.Samples = append(res.Samples, sampleJSON{AtS: float64(s[i].AtUS-origin) / 1e6, LatMs: float64(s[i].LatUS) / 1000})
	}
}

// WriteTable prints the human summary.
func (res *Result) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("scenario", res.Scenario)
	row("clients", fmt.Sprintf("%d in %d process(es)", res.Clients, res.Procs))
	row("stream", res.Stream)
	row("load average at start", res.LoadAvg)
	if res.Scenario == "idle" {
		row("connected and caught up in", fmt.Sprintf("%.2fs", res.Seconds))
		row("clients closed by the bridge", fmt.Sprintf("%d %v", res.Closed, res.CloseCodes))
	}
	if res.Published > 0 {
		row("published", fmt.Sprintf("%d (%.0f/s)", res.Published, res.PublishedPerS))
		row("delivered", fmt.Sprintf("%d of %d expected", res.Delivered, res.Expected))
		row("throughput", fmt.Sprintf("%.0f deliveries/s over %.2fs", res.DeliveriesPerS, res.Seconds))
		if res.LatencySamples > 0 {
			row("latency p50/p90/p99/max", fmt.Sprintf("%.2f / %.2f / %.2f / %.2f ms (%d deliveries, publish to receive)",
				res.P50ms, res.P90ms, res.P99ms, res.MaxMs, res.LatencySamples))
		}
		row("lost", fmt.Sprint(res.Lost))
		row("duplicated", fmt.Sprint(res.Duplicated))
		row("misdelivered", fmt.Sprint(res.Misdelivered))
		row("clients closed by the bridge", fmt.Sprintf("%d %v", res.Closed, res.CloseCodes))
	}
	if res.CaughtUpSeconds > 0 {
		row("all caught up after", fmt.Sprintf("%.3fs", res.CaughtUpSeconds))
		if res.StreamReads >= 0 {
			row("stream reads (XRANGE/XREVRANGE/XREAD)", fmt.Sprint(res.StreamReads))
		} else {
			row("stream reads", "n/a (the server has no INFO commandstats; use a real redis-server)")
		}
		row("bridge backfill page reads", fmt.Sprint(res.BackfillReads))
	}
	if res.RSSBytes > 0 {
		row("bridge RSS", fmt.Sprintf("%.1f MiB (base %.1f MiB, %.0f B per connection; Go heap in use %.0f B per connection)",
			float64(res.RSSBytes)/(1<<20), float64(res.RSSBaseBytes)/(1<<20), res.RSSPerConnBytes, res.HeapPerConn))
		row("bridge goroutines", fmt.Sprintf("%d (base %d)", res.Goroutines, res.GoroutinesBase))
		row("bridge CPU", fmt.Sprintf("%.2fs", res.CPUSeconds))
	}
	_ = tw.Flush()
}

// WriteJSON writes the result as one JSON object.
func (res *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// WriteReport writes a self-contained HTML page with inline SVG charts:
// latency over time and the latency histogram.
func (res *Result) WriteReport(path string) error {
	var b strings.Builder
	b.WriteString("<!doctype html><meta charset=utf-8><title>notifybridge bench</title>")
	b.WriteString("<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td{padding:2px 12px 2px 0}svg{background:#fafafa;border:1px solid #ddd;margin:1em 0}</style>")
	b.WriteString("<h1>notifybridge bench: " + html.EscapeString(res.Scenario) + "</h1><pre>")
	var t strings.Builder
	res.WriteTable(&t)
	b.WriteString(html.EscapeString(t.String()))
	b.WriteString("</pre>")
	if len(res.Samples) > 0 {
		b.WriteString("<h2>Latency over time</h2>")
		b.WriteString(res.scatterSVG(800, 300))
		b.WriteString("<h2>Latency histogram</h2>")
		b.WriteString(res.histogramSVG(800, 300))
	}
	b.WriteString(fmt.Sprintf("<p>generated %s</p>", time.Now().UTC().Format(time.RFC3339)))
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// SVG writes the latency-over-time chart alone (for docs).
func (res *Result) SVG(path string) error {
	return os.WriteFile(path, []byte(res.scatterSVG(800, 300)), 0o644)
}

func (res *Result) scatterSVG(w, h float64) string {
	const pad = 50.0
	maxT, maxL := 0.0, 0.0
	for _, s := range res.Samples {
		maxT, maxL = math.Max(maxT, s.AtS), math.Max(maxL, s.LatMs)
	}
	maxT, maxL = math.Max(maxT, 0.001), math.Max(maxL, 0.001)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#fafafa"/>`)
	fmt.Fprintf(&b, `<line x1="%v" y1="%v" x2="%v" y2="%v" stroke="#888"/>`, pad, h-pad, w-10, h-pad)
	fmt.Fprintf(&b, `<line x1="%v" y1="10" x2="%v" y2="%v" stroke="#888"/>`, pad, pad, h-pad)
	fmt.Fprintf(&b, `<text x="%v" y="%v">%.1fs</text><text x="%v" y="%v">0</text>`, w-40, h-pad+15, maxT, pad, h-pad+15)
	fmt.Fprintf(&b, `<text x="5" y="15">%.1f ms</text><text x="5" y="%v">0 ms</text>`, maxL, h-pad)
	fmt.Fprintf(&b, `<text x="%v" y="%v">time since first publish</text>`, w/2-50, h-15)
	for _, s := range res.Samples {
		x := pad + s.AtS/maxT*(w-pad-10)
		y := h - pad - s.LatMs/maxL*(h-pad-10)
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.2" fill="#2a6fdb" fill-opacity="0.5"/>`, x, y)
	}
	for _, p := range []struct {
		name string
		v    float64
		c    string
	}{{"p50", res.P50ms, "#2a9d3a"}, {"p99", res.P99ms, "#d33"}} {
		y := h - pad - p.v/maxL*(h-pad-10)
		fmt.Fprintf(&b, `<line x1="%v" y1="%.1f" x2="%v" y2="%.1f" stroke="%s" stroke-dasharray="4 3"/><text x="%v" y="%.1f" fill="%s">%s %.2f ms</text>`,
			pad, y, w-10, y, p.c, w-110, y-3, p.c, p.name, p.v)
	}
	b.WriteString("</svg>")
	return b.String()
}

func (res *Result) histogramSVG(w, h float64) string {
	const pad = 50.0
	maxC := 1
	for _, bc := range res.Histogram {
		maxC = max(maxC, bc.Count)
	}
	n := float64(len(res.Histogram))
	bw := (w - pad - 10) / n
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`, w, h)
	for i, bc := range res.Histogram {
		bh := float64(bc.Count) / float64(maxC) * (h - pad - 20)
		x := pad + float64(i)*bw
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#2a6fdb"/>`, x+2, h-pad-bh, bw-4, bh)
		label := fmt.Sprintf("≤%g", bc.UpToMs)
		if bc.UpToMs < 0 {
			label = "more"
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%v">%s</text><text x="%.1f" y="%.1f">%d</text>`, x+2, h-pad+15, label, x+2, h-pad-bh-3, bc.Count)
	}
	fmt.Fprintf(&b, `<text x="%v" y="%v">latency (ms)</text></svg>`, w/2-30, h-15)
	return b.String()
}

// progress is a bar on terminals and a few plain lines elsewhere.
type progress struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	out   io.Writer
	label string
	total int
	done  int
	next  int
}

func newProgress(o Options, total int, label string) *progress {
	p := &progress{out: o.Progress, label: label, total: total, next: total / 4}
	if o.Bar && o.Progress != nil {
		p.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(o.Progress), progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
	}
	return p
}

func (p *progress) add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Add(n)
		return
	}
	if p.out == nil {
		return
	}
	p.done += n
	if p.done >= p.next && p.done < p.total {
		fmt.Fprintf(p.out, "%s: %d/%d\n", p.label, p.done, p.total)
		p.next += max(1, p.total/4)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		return
	}
	if p.out != nil {
		fmt.Fprintf(p.out, "%s: done\n", p.label)
	}
}

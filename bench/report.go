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
	"text/tabwriter"
	"time"
)

// summarizeLatency turns the merged histogram and reservoirs into the
// result's percentiles, report buckets and chart points.
func (r *runner) summarizeLatency() {
	res := r.res
	if rh := &res.replayHist; rh.N > 0 {
		res.Replayed = rh.N
		res.ReplayP50ms, res.ReplayP99ms, res.ReplayMaxMs = rh.quantile(.50), rh.quantile(.99), float64(rh.MaxUS)/1000
	}
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
	origin := r.t0.UnixMicro() // the timeline's zero too, so the charts line up
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
	if res.Scenario != "ingest" && res.Scenario != "publish" {
		row("clients", fmt.Sprintf("%d in %d process(es)", res.Clients, res.Procs))
	}
	row("stream", res.Stream)
	row("load average at start", res.LoadAvg)
	if res.Scenario == "idle" {
		row("connected and caught up in", fmt.Sprintf("%.2fs", res.Seconds))
		row("clients closed by the bridge", closedText(res))
	}
	if res.Transport != "" && res.Scenario != "ingest" && res.Scenario != "publish" {
		row("transport", res.Transport)
	}
	if res.Scenario == "ingest" {
		res.ingestRows(row)
	} else if res.Scenario == "revoke" || res.Scenario == "publish" {
		res.controlRows(row)
		if res.Scenario == "revoke" {
			row("clients closed by the bridge", closedText(res))
		}
	} else if res.Published > 0 {
		row("published", fmt.Sprintf("%d (%.0f/s)", res.Published, res.PublishedPerS))
		row("delivered", fmt.Sprintf("%d of %d expected", res.Delivered, res.Expected))
		row("throughput", fmt.Sprintf("%.0f deliveries/s over %.2fs", res.DeliveriesPerS, res.Seconds))
		if res.LatencySamples > 0 {
			row("latency p50/p90/p99/max", fmt.Sprintf("%.2f / %.2f / %.2f / %.2f ms (%d deliveries, publish to receive)",
				res.P50ms, res.P90ms, res.P99ms, res.MaxMs, res.LatencySamples))
			if res.RawP99ms > 0 {
				row("raw XREAD BLOCK p50/p99/max", fmt.Sprintf("%.2f / %.2f / %.2f ms (same run, Redis alone)", res.RawP50ms, res.RawP99ms, res.RawMaxMs))
			}
		}
		if res.Scenario == "mixed" {
			row("mix", fmt.Sprintf("%d broadcasts (share %g), %d targeted", res.Broadcasts, res.BroadcastShare, res.Published-res.Broadcasts))
			row("reconnects", fmt.Sprintf("%d (%g%% of clients a second, each resuming with last_event_id; %d dial errors, retried)",
				res.Reconnects, res.ChurnPerS, res.ReconnectFailed))
			if res.Replayed > 0 {
				row("replayed on resume p50/p99/max", fmt.Sprintf("%.2f / %.2f / %.2f ms (%d deliveries, publish to receive, time away included)",
					res.ReplayP50ms, res.ReplayP99ms, res.ReplayMaxMs, res.Replayed))
			}
		}
		if res.Scenario == "refresh" {
			res.controlRows(row)
		}
		row("lost", fmt.Sprint(res.Lost))
		row("duplicated", fmt.Sprint(res.Duplicated))
		row("misdelivered", fmt.Sprint(res.Misdelivered))
		if res.Foreign > 0 {
			row("events of other runs (ignored)", fmt.Sprint(res.Foreign))
		}
		row("clients closed by the bridge", closedText(res))
		if res.Transport == "poll" {
			row("polls refused (503), asked again after 1 s", fmt.Sprint(res.ReconnectFailed))
		}
		if res.SlowClients > 0 {
			row("slow clients closed (bridge metric)", fmt.Sprintf("%d of %d", res.SlowClosed, res.SlowClients))
		}
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
	if res.RSSBytes > 0 && res.Scenario == "ingest" {
		row("bridge at the end", fmt.Sprintf("RSS %.1f MiB, %d goroutines, %.2fs CPU since launch (%.0f µs per entry)",
			float64(res.RSSBytes)/(1<<20), res.Goroutines, res.CPUSeconds, 1e6*res.CPUSeconds/float64(max(res.Published, 1))))
	} else if res.RSSBytes > 0 {
		row("bridge RSS", fmt.Sprintf("%.1f MiB (base %.1f MiB, %.0f B per connection; Go heap in use %.0f B per connection)",
			float64(res.RSSBytes)/(1<<20), float64(res.RSSBaseBytes)/(1<<20), res.RSSPerConnBytes, res.HeapPerConn))
		row("bridge goroutines", fmt.Sprintf("%d (base %d)", res.Goroutines, res.GoroutinesBase))
		if res.CPUPerDelivery > 0 {
			row("bridge CPU", fmt.Sprintf("%.2fs (%.2f µs per delivery)", res.CPUSeconds, res.CPUPerDelivery))
		} else {
			row("bridge CPU", fmt.Sprintf("%.2fs", res.CPUSeconds))
		}
	}
	if res.RSSLoadStart > 0 {
		minute := "n/a (shorter than a minute)"
		if res.RSSAfter1m > 0 {
			minute = fmt.Sprintf("%.1f", float64(res.RSSAfter1m)/(1<<20))
		}
		row("bridge RSS over the load", fmt.Sprintf("start %.1f, after 1 min %s, end %.1f, max %.1f MiB",
			float64(res.RSSLoadStart)/(1<<20), minute, float64(res.RSSEnd)/(1<<20), float64(res.RSSMax)/(1<<20)))
		row("bridge goroutines over the load", fmt.Sprintf("start %d, end %d", res.GoroutinesStart, res.GoroutinesEnd))
	}
	_ = tw.Flush()
}

func (res *Result) ingestRows(row func(k, v string)) {
	row("backlog", fmt.Sprintf("%d entries, %d B of data each", res.Published, res.EntryBytes))
	row("bridge caught up", fmt.Sprintf("%.2fs from launch (ready after %.2fs): %.0f entries/s", res.BridgeSeconds, res.BridgeReadyS, res.BridgePerS))
	row("raw XREADGROUP COUNT 256 + XACK", fmt.Sprintf("%.2fs: %.0f entries/s (same backlog, same run, bridge stopped)", res.RawSeconds, res.RawPerS))
	row("raw / bridge", fmt.Sprintf("%.2f", res.RawRatio))
	row("acknowledged", fmt.Sprintf("bridge %d, raw loop %d, of %d", res.BridgeAcked, res.RawAcked, res.Published))
	row("dead-lettered", fmt.Sprint(res.DeadLetters))
	row("lost", fmt.Sprint(res.Lost))
}

func closedText(res *Result) string {
	if res.Closed == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (close code: clients %v)", res.Closed, res.CloseCodes)
}

// WriteJSON writes the result as one JSON object.
func (res *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// WriteReport writes a self-contained HTML page: the table and inline SVG
// charts (timeline; for fan-out runs, latency over time and its histogram).
func (res *Result) WriteReport(path string) error {
	var b strings.Builder
	b.WriteString("<!doctype html><meta charset=utf-8><title>notifybridge bench</title>")
	b.WriteString("<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}svg{border:1px solid #ddd;margin:1em 0}</style>")
	b.WriteString("<h1>notifybridge bench: " + html.EscapeString(res.Scenario) + "</h1><pre>")
	var t strings.Builder
	res.WriteTable(&t)
	b.WriteString(html.EscapeString(t.String()))
	b.WriteString("</pre>")
	b.WriteString(res.svg())
	if len(res.Samples) > 0 {
		b.WriteString("<h2>Latency histogram</h2>")
		b.WriteString(res.histogramSVG(800, 300))
	}
	b.WriteString(fmt.Sprintf("<p>generated %s</p>", time.Now().UTC().Format(time.RFC3339)))
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// SVG writes the run's charts as one standalone SVG (for docs).
func (res *Result) SVG(path string) error {
	return os.WriteFile(path, []byte(res.svg()), 0o644)
}

// svg picks the charts that say something about the scenario: latency over
// time for fan-out, clients caught up over time for a resume storm, bridge
// memory against connections for idle; every run also gets the timeline.
func (res *Result) svg() string {
	const w, ph = 800.0, 260.0
	var panels []string
	head := fmt.Sprintf("%s, %d clients: ", res.Scenario, res.Clients)
	deliveries := func() string {
		return res.linePanel(w, ph, "deliveries per second",
			"/s", []series{{"received by clients", "#2a6fdb", res.rate(func(p point) float64 { return float64(p.Received) })}})
	}
	rss := func(title string) string {
		return res.linePanel(w, ph, title, " MiB", []series{
			{"RSS", "#d9822b", res.series(func(p point) float64 { return float64(p.RSSBytes) / (1 << 20) })}})
	}
	switch res.Scenario {
	case "broadcast", "targeted":
		head += fmt.Sprintf("%d events at %.0f/s, %.0f deliveries/s, p50 %.1f ms, p99 %.1f ms, lost %d, duplicated %d",
			res.Published, res.PublishedPerS, res.DeliveriesPerS, res.P50ms, res.P99ms, res.Lost, res.Duplicated)
		panels = append(panels, res.scatterPanel(w, ph), deliveries())
		if res.SlowClients > 0 {
			first := float64(res.Timeline[0].SlowClosed)
			panels = append(panels, res.linePanel(w, ph, fmt.Sprintf("slow clients (never reading) closed by the bridge, of %d", res.SlowClients), "",
				[]series{{"closed", "#d33", res.series(func(p point) float64 { return float64(p.SlowClosed) - first })}}))
		}
	case "resume-storm":
		head += fmt.Sprintf("all caught up after %.2fs, %d stream reads, %d backfill pages, lost %d, duplicated %d",
			res.CaughtUpSeconds, res.StreamReads, res.BackfillReads, res.Lost, res.Duplicated)
		panels = append(panels, res.linePanel(w, ph, "clients", "", []series{
			{"connected", "#999", res.series(func(p point) float64 { return float64(p.Connected) })},
			{"caught up", "#2a6fdb", res.series(func(p point) float64 { return float64(p.CaughtUp) })},
		}))
	case "ingest":
		head = fmt.Sprintf("ingest of %d × %d B: bridge %.0f entries/s (%.2fs from launch), raw XREADGROUP+XACK %.0f entries/s, ratio %.2f",
			res.Published, res.EntryBytes, res.BridgePerS, res.BridgeSeconds, res.RawPerS, res.RawRatio)
		panels = append(panels, res.linePanel(w, ph, "entries read by the bridge", "", []series{
			{"entries-read (XINFO GROUPS)", "#2a6fdb", res.series(func(p point) float64 { return float64(p.Received) })}}))
	case "idle":
		head += fmt.Sprintf("bridge RSS %.1f MiB (%.0f B per connection), %d goroutines",
			float64(res.RSSBytes)/(1<<20), res.RSSPerConnBytes, res.Goroutines)
		panels = append(panels, res.linePanel(w, ph, "connections", "", []series{
			{"connected", "#2a6fdb", res.series(func(p point) float64 { return float64(p.Connected) })},
		}))
	case "mixed":
		// RSS first: whether it stays flat under churn is what this run is for.
		head += fmt.Sprintf("%d events at %.0f/s, %.3g%% broadcast, %d reconnects, p50 %.1f ms, p99 %.1f ms, lost %d, duplicated %d",
			res.Published, res.PublishedPerS, 100*res.BroadcastShare, res.Reconnects, res.P50ms, res.P99ms, res.Lost, res.Duplicated)
		title := fmt.Sprintf("bridge resident memory: %.1f MiB when publishing began, %.1f at the end, max %.1f",
			float64(res.RSSLoadStart)/(1<<20), float64(res.RSSEnd)/(1<<20), float64(res.RSSMax)/(1<<20))
		panels = append(panels, rss(title), res.scatterPanel(w, ph), deliveries(),
			res.linePanel(w, ph, "reconnects per second", "/s", []series{
				{"reconnects", "#8e44ad", res.rate(func(p point) float64 { return float64(p.Reconnects) })}}))
	}
	if res.Scenario != "mixed" {
		panels = append(panels, rss("bridge resident memory"))
	}
	panels = append(panels,
		res.linePanel(w, ph, "bridge CPU (cores busy) and goroutines / 100", "", []series{
			{"CPU", "#d33", res.rate(func(p point) float64 { return p.CPUSeconds })},
			{"goroutines/100", "#2a9d3a", res.series(func(p point) float64 { return float64(p.Goroutines) / 100 })}}),
	)
	var b strings.Builder
	h := 40 + ph*float64(len(panels))
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#fff"/>`)
	fmt.Fprintf(&b, `<text x="10" y="18" font-size="13" font-weight="bold">%s</text>`, html.EscapeString(head))
	fmt.Fprintf(&b, `<text x="10" y="33" fill="#666">load average at start %s; %s</text>`, html.EscapeString(res.LoadAvg), res.Started.Format("2006-01-02 15:04 UTC"))
	for i, p := range panels {
		fmt.Fprintf(&b, `<g transform="translate(0,%.0f)">%s</g>`, 40+ph*float64(i), p)
	}
	b.WriteString("</svg>")
	return b.String()
}

type xy struct{ x, y float64 }

type series struct {
	name, color string
	pts         []xy
}

func (res *Result) series(f func(point) float64) []xy {
	out := make([]xy, 0, len(res.Timeline))
	for _, p := range res.Timeline {
		out = append(out, xy{p.AtS, f(p)})
	}
	return out
}

// rate differentiates a cumulative timeline value (per second) over
// windows of at least a second: client processes report every 100 ms and
// the timeline samples every 250 ms, so shorter windows would alias.
func (res *Result) rate(f func(point) float64) []xy {
	var out []xy
	j := 0
	for i := 1; i < len(res.Timeline); i++ {
		b := res.Timeline[i]
		for j+1 < i && b.AtS-res.Timeline[j+1].AtS >= 1 {
			j++
		}
		a := res.Timeline[j]
		if dt := b.AtS - a.AtS; dt > 0 {
			out = append(out, xy{b.AtS, math.Max(0, (f(b)-f(a))/dt)})
		}
	}
	return out
}

// niceStep is a 1, 2 or 5 × 10^k step giving about n ticks up to max.
func niceStep(max float64, n int) float64 {
	if max <= 0 {
		return 1
	}
	raw := max / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

// frame draws a panel's axes, ticks and title; it returns the mapping from
// data to panel coordinates.
func frame(b *strings.Builder, w, h float64, title, xLabel, yUnit string, xMax, yMax float64) func(x, y float64) (float64, float64) {
	const left, right, top, bottom = 60.0, 20.0, 24.0, 36.0
	xStep, yStep := niceStep(xMax, 8), niceStep(yMax, 4)
	xMax = math.Max(xStep, math.Ceil(xMax/xStep)*xStep)
	yMax = math.Max(yStep, math.Ceil(yMax/yStep)*yStep)
	pw, phh := w-left-right, h-top-bottom
	m := func(x, y float64) (float64, float64) {
		return left + x/xMax*pw, top + phh - math.Min(y, yMax)/yMax*phh
	}
	fmt.Fprintf(b, `<text x="%v" y="16" font-weight="bold">%s</text>`, left, html.EscapeString(title))
	for y := 0.0; y <= yMax+yStep/2; y += yStep {
		_, py := m(0, y)
		fmt.Fprintf(b, `<line x1="%v" y1="%.1f" x2="%v" y2="%.1f" stroke="#eee"/><text x="%v" y="%.1f" text-anchor="end">%s%s</text>`,
			left, py, w-right, py, left-4, py+4, fmtNum(y), yUnit)
	}
	for x := 0.0; x <= xMax+xStep/2; x += xStep {
		px, _ := m(x, 0)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%v" x2="%.1f" y2="%v" stroke="#888"/><text x="%.1f" y="%v" text-anchor="middle">%s</text>`,
			px, top+phh, px, top+phh+4, px, top+phh+16, fmtNum(x))
	}
	fmt.Fprintf(b, `<line x1="%v" y1="%v" x2="%v" y2="%v" stroke="#888"/>`, left, top+phh, w-right, top+phh)
	fmt.Fprintf(b, `<text x="%v" y="%v" text-anchor="middle" fill="#666">%s</text>`, left+pw/2, h-4, html.EscapeString(xLabel))
	return m
}

func fmtNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", math.Round(v*1000)/1000)
}

func (res *Result) linePanel(w, h float64, title, yUnit string, ss []series) string {
	xMax, yMax := 0.0, 0.0
	for _, s := range ss {
		for _, p := range s.pts {
			xMax, yMax = math.Max(xMax, p.x), math.Max(yMax, p.y)
		}
	}
	var b strings.Builder
	m := frame(&b, w, h, title, "seconds since the run started", yUnit, xMax, yMax)
	for i, s := range ss {
		if len(s.pts) > 0 {
			b.WriteString(`<polyline fill="none" stroke-width="1.5" stroke="` + s.color + `" points="`)
			for _, p := range s.pts {
				x, y := m(p.x, p.y)
				fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
			}
			b.WriteString(`"/>`)
		}
		// Legend: one line per series, right-aligned beside the title.
		fmt.Fprintf(&b, `<text x="%v" y="%d" fill="%s" text-anchor="end">%s</text>`, w-24, 16+12*i, s.color, html.EscapeString(s.name))
	}
	return b.String()
}

// scatterPanel plots every sampled delivery's latency against its time. The
// y axis stops at 3 × p99 (at least 1 ms) so the bulk stays readable; the
// points above are drawn on the top edge and counted in the title.
func (res *Result) scatterPanel(w, h float64) string {
	xMax, yCap := 0.0, math.Max(1, 3*res.P99ms)
	clipped := 0
	for _, s := range res.Samples {
		xMax = math.Max(xMax, s.AtS)
		if s.LatMs > yCap {
			clipped++
		}
	}
	title := fmt.Sprintf("latency, publish to receive (%d sampled deliveries", len(res.Samples))
	if clipped > 0 {
		title += fmt.Sprintf("; %d above %.1f ms drawn at the top, max %.1f ms", clipped, yCap, res.MaxMs)
	}
	title += ")"
	var b strings.Builder
	m := frame(&b, w, h, title, "seconds since the run started", " ms", xMax, yCap)
	for _, s := range res.Samples {
		x, y := m(s.AtS, s.LatMs)
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.2" fill="#2a6fdb" fill-opacity="0.45"/>`, x, y)
	}
	for _, p := range []struct {
		name string
		v    float64
		c    string
	}{{"p50", res.P50ms, "#2a9d3a"}, {"p99", res.P99ms, "#d33"}} {
		x0, y := m(0, p.v)
		x1, _ := m(xMax, p.v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="4 3"/><text x="%.1f" y="%.1f" fill="%s" text-anchor="end">%s %.2f ms</text>`,
			x0, y, x1, y, p.c, x1, y-3, p.c, p.name, p.v)
	}
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

package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress reports one long step (connecting, publishing, prefilling): on a
// terminal a single line redrawn in place at most ten times a second and
// cleared at the end; elsewhere a plain line at each quarter and "done".
//
// It is ours rather than a progress-bar package because whatever bench
// imports is linked into the one notifybridge binary, and such a package's
// init work (colour tables, regexps, spinner sets) would run at every
// `serve` start for nothing.
type progress struct {
	mu    sync.Mutex
	out   io.Writer // nil: report nothing
	tty   bool      // redraw one line with \r
	label string
	total int
	done  int
	next  int       // plain lines: the count that prints the next one
	drawn time.Time // terminal: when the line was last drawn
}

const barWidth = 30

func newProgress(o Options, total int, label string) *progress {
	return &progress{out: o.Progress, tty: o.Bar && o.Progress != nil, label: label, total: total, next: total / 4}
}

func (p *progress) add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out == nil {
		return
	}
	p.done += n
	if p.tty {
		if now := time.Now(); now.Sub(p.drawn) >= 100*time.Millisecond {
			p.drawn = now
			p.drawLocked()
		}
		return
	}
	if p.done >= p.next && p.done < p.total {
		fmt.Fprintf(p.out, "%s: %d/%d\n", p.label, p.done, p.total)
		p.next += max(1, p.total/4)
	}
}

// drawLocked writes the terminal line: label, bar, percent, count.
func (p *progress) drawLocked() {
	frac := 1.0
	if p.total > 0 {
		frac = min(1, max(0, float64(p.done)/float64(p.total)))
	}
	full := int(frac * barWidth)
	fmt.Fprintf(p.out, "\r%s %3.0f%% |%s%s| (%d/%d)", p.label, frac*100,
		strings.Repeat("█", full), strings.Repeat(" ", barWidth-full), p.done, p.total)
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.out == nil:
	case p.tty:
		fmt.Fprint(p.out, "\r\x1b[K") // clear the line: the step's result follows
	default:
		fmt.Fprintf(p.out, "%s: done\n", p.label)
	}
}

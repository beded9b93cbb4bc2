package bench

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

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

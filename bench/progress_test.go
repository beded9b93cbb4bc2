package bench

import (
	"strings"
	"testing"
)

func TestProgressPlainLinesAtQuarters(t *testing.T) {
	var b strings.Builder
	p := newProgress(Options{Progress: &b}, 100, "publishing")
	for range 10 {
		p.add(10)
	}
	p.finish()
	want := "publishing: 30/100\npublishing: 50/100\npublishing: 80/100\npublishing: done\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
}

func TestProgressTerminalRedrawsOneLine(t *testing.T) {
	var b strings.Builder
	p := newProgress(Options{Progress: &b, Bar: true}, 40, "connecting")
	p.add(10) // the first add always draws
	p.add(10)
	p.finish()
	out := b.String()
	if strings.Contains(out, "\n") {
		t.Fatalf("terminal output has a newline: %q", out)
	}
	if !strings.HasPrefix(out, "\rconnecting  25% |") || !strings.Contains(out, "| (10/40)") {
		t.Fatalf("first draw: %q", out)
	}
	if !strings.HasSuffix(out, "\r\x1b[K") {
		t.Fatalf("finish does not clear the line: %q", out)
	}
}

func TestProgressNilWriterIsQuiet(t *testing.T) {
	p := newProgress(Options{Bar: true}, 10, "x")
	p.add(5)
	p.finish()
}

package bench

import (
	"math"
	"sync/atomic"
	"testing"
)

func TestHistBucketsAreContiguous(t *testing.T) {
	for us := int64(0); us < 1<<20; us++ {
		i := bucketOf(us)
		if us < bucketLow(i) || us >= bucketLow(i+1) {
			t.Fatalf("%d µs in bucket %d = [%d, %d)", us, i, bucketLow(i), bucketLow(i+1))
		}
	}
}

func TestHistQuantilesWithinThreePercent(t *testing.T) {
	var a, b latHist
	for us := int64(1); us <= 100000; us++ { // 1 µs … 100 ms, uniform
		if us%2 == 0 {
			a.add(us)
		} else {
			b.add(us)
		}
	}
	a.merge(&b) // as the parent merges two client processes
	for _, q := range []float64{.5, .9, .99} {
		want := q * 100 // ms
		if got := a.quantile(q); math.Abs(got-want)/want > 0.03 {
			t.Errorf("q%.2f = %.3f ms, want %.3f ± 3%%", q, got, want)
		}
	}
	if a.quantile(1) != 100 || a.N != 100000 {
		t.Errorf("max %.3f ms, n %d", a.quantile(1), a.N)
	}
}

func TestClientCountsRepeatsAndMisdelivery(t *testing.T) {
	var recv, caught atomic.Int64
	c := &wsClient{user: 7, tag: runTag("R1"), received: &recv, caught: &caught}
	var sink latencySink
	for _, f := range []string{
		`{"id":"5-0","type":"bench","data":{"t":1,"u":7,"r":"R1","p":"x"}}`,
		`{"id":"5-1","type":"bench","data":{"t":1,"u":7,"r":"R1","p":"x"}}`,
		`{"id":"5-1","type":"bench","data":{"t":1,"u":7,"r":"R1","p":"x"}}`,  // repeat
		`{"id":"4-9","type":"bench","data":{"t":1,"u":7,"r":"R1","p":"x"}}`,  // out of order
		`{"id":"10-0","type":"bench","data":{"t":1,"u":8,"r":"R1","p":"x"}}`, // someone else's
		`{"id":"11-0","type":"bench","data":{"t":1,"r":"R2","p":"x"}}`,       // another run's broadcast
		`{"control":"caught_up","last":"10-0"}`,
		`{"control":"caught_up","last":"10-0"}`,
	} {
		c.frame([]byte(f), &sink)
	}
	if c.unique != 3 || c.dups != 2 || c.misdeliver != 1 || c.foreign != 1 || recv.Load() != 5 || caught.Load() != 1 {
		t.Fatalf("unique %d dups %d misdelivered %d foreign %d received %d caught %d", c.unique, c.dups, c.misdeliver, c.foreign, recv.Load(), caught.Load())
	}
	if sink.hist.N != 5 {
		t.Fatalf("latency samples %d, want 5", sink.hist.N)
	}
}

func TestReservoirStaysBounded(t *testing.T) {
	var s latencySink
	for i := range int64(3 * reservoirSize) {
		s.add(i, i)
	}
	if len(s.samples) != reservoirSize || s.hist.N != 3*reservoirSize {
		t.Fatalf("samples %d, n %d", len(s.samples), s.hist.N)
	}
}

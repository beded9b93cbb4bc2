package bench

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
)

// latHist is a log-linear latency histogram in microseconds: exact below
// 64 µs, then 32 buckets per power of two (about 3 % relative error). It is
// fixed-size and mergeable, so client processes can send theirs to the
// parent and percentiles stay correct across processes, which averaging
// per-process percentiles would not be.
type latHist struct {
	Counts []int64 `json:"counts"` // index: bucketOf(µs)
	N      int64   `json:"n"`
	MaxUS  int64   `json:"max_us"`
}

const histBuckets = 32 * 40 // up to 2^39 µs: beyond any run

func bucketOf(us int64) int {
	if us < 64 {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 6
	return min(32*e+int(us>>e), histBuckets-1)
}

// bucketLow is the smallest value that falls into bucket i.
func bucketLow(i int) int64 {
	if i < 64 {
		return int64(i)
	}
	e := i/32 - 1
	return int64(i-32*e) << e
}

func (h *latHist) add(us int64) {
	if h.Counts == nil {
		h.Counts = make([]int64, histBuckets)
	}
	h.Counts[bucketOf(us)]++
	h.N++
	h.MaxUS = max(h.MaxUS, us)
}

func (h *latHist) merge(o *latHist) {
	if o == nil || o.N == 0 {
		return
	}
	if h.Counts == nil {
		h.Counts = make([]int64, histBuckets)
	}
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.N += o.N
	h.MaxUS = max(h.MaxUS, o.MaxUS)
}

// quantile returns the q-quantile in milliseconds: the middle of the bucket
// holding the rank, never above the exact maximum.
func (h *latHist) quantile(q float64) float64 {
	if h.N == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.N)))
	rank = min(max(rank, 1), h.N)
	if rank == h.N {
		return float64(h.MaxUS) / 1000 // the top is known exactly
	}
	var seen int64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			mid := (float64(bucketLow(i)) + float64(bucketLow(i+1))) / 2
			if i < 64 {
				mid = float64(i)
			}
			return math.Min(mid, float64(h.MaxUS)) / 1000
		}
	}
	return float64(h.MaxUS) / 1000
}

// coarse folds the histogram into the report's millisecond buckets; a fine
// bucket straddling a coarse bound goes to the bucket of its lower edge.
func (h *latHist) coarse(boundsMs []float64) []int {
	out := make([]int, len(boundsMs))
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		ms := float64(bucketLow(i)) / 1000
		out[min(sort.SearchFloat64s(boundsMs, ms), len(out)-1)] += int(c)
	}
	return out
}

// sample is one delivery for the latency-over-time chart.
type sample struct {
	AtUS  int64 `json:"at"`  // receive time, unix µs
	LatUS int64 `json:"lat"` // publish to receive, µs
}

// latencySink collects what every client of one process measured: the full
// histogram, and a uniform reservoir of samples for the chart (bounded
// memory whatever the number of deliveries).
type latencySink struct {
	mu      sync.Mutex
	hist    latHist
	samples []sample
	rng     *rand.Rand

	// phase, when set, splits the histogram by the run's phase as well
	// (refresh: before, during and after the token wave).
	phase  *atomic.Int32
	phases [phaseCount]latHist
}

// phaseCount is how many phases a run's live latency is split into.
const phaseCount = 3

const reservoirSize = 4000

func (s *latencySink) add(atUS, latUS int64) {
	s.mu.Lock()
	s.hist.add(latUS)
	if s.phase != nil {
		if ph := s.phase.Load(); ph >= 0 && ph < phaseCount {
			s.phases[ph].add(latUS)
		}
	}
	if len(s.samples) < reservoirSize {
		s.samples = append(s.samples, sample{atUS, latUS})
	} else {
		if s.rng == nil {
			s.rng = rand.New(rand.NewPCG(uint64(atUS), 7))
		}
		if j := s.rng.Int64N(s.hist.N); j < reservoirSize {
			s.samples[j] = sample{atUS, latUS}
		}
	}
	s.mu.Unlock()
}

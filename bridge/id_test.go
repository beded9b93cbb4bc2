package bridge

import (
	"testing"
	"time"
)

func TestIDNextPrev(t *testing.T) {
	const max = ^uint64(0)
	for _, tt := range []struct{ id, next, prev ID }{
		{ID{}, ID{Seq: 1}, ID{}},
		{ID{Ms: 5, Seq: 3}, ID{Ms: 5, Seq: 4}, ID{Ms: 5, Seq: 2}},
		{ID{Ms: 5}, ID{Ms: 5, Seq: 1}, ID{Ms: 4, Seq: max}},
		{ID{Ms: 5, Seq: max}, ID{Ms: 6}, ID{Ms: 5, Seq: max - 1}},
		{ID{Ms: max, Seq: max}, ID{Ms: max, Seq: max}, ID{Ms: max, Seq: max - 1}},
	} {
		if got := tt.id.Next(); got != tt.next {
			t.Errorf("%v.Next() = %v, want %v", tt.id, got, tt.next)
		}
		if got := tt.id.Prev(); got != tt.prev {
			t.Errorf("%v.Prev() = %v, want %v", tt.id, got, tt.prev)
		}
	}
}

func TestLagSince(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	tests := []struct {
		name string
		ms   uint64
		want time.Duration
	}{
		{"a second ago", 1_699_999_999_000, time.Second},
		{"now", 1_700_000_000_000, 0},
		{"in the future", 9_999_999_999_999, 0},
		{"beyond int64 milliseconds", 1<<63 + 5, 0},
		{"the largest id time", ^uint64(0), 0},
		{"the epoch", 0, 1_700_000_000_000 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := lagSince(tt.ms, now); got != tt.want {
			t.Errorf("%s: lagSince(%d) = %v, want %v", tt.name, tt.ms, got, tt.want)
		}
	}
}

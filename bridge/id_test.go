package bridge

import "testing"

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

package streams

import (
	"strconv"
	"testing"
)

func TestIDAfter(t *testing.T) {
	max := strconv.FormatUint(^uint64(0), 10)
	for _, tt := range []struct{ in, want string }{
		{"0-0", "0-1"},
		{"1700000000000-7", "1700000000000-8"},
		{"5-" + max, "6-0"},
		{"junk", "(junk"},
	} {
		if got := idAfter(tt.in); got != tt.want {
			t.Errorf("idAfter(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

package conntest

import (
	"slices"
	"testing"
)

func TestDecode(t *testing.T) {
	payload := []byte(`{"id":"1-0","type":"t","data":{"a":1}}`)
	f := Decode(t, append([]byte{0x81, byte(len(payload))}, payload...))
	if f.ID != "1-0" || f.Type != "t" || string(f.Data) != `{"a":1}` || f.Raw != string(payload) {
		t.Fatalf("decoded %+v", f)
	}
	long := append([]byte(`{"control":"gap","requested":"1-0","oldest":"5-0","pad":"`), make([]byte, 200)...)
	for i := range 200 {
		long[len(long)-200+i] = 'x'
	}
	long = append(long, `"}`...)
	f = Decode(t, append([]byte{0x81, 126, 0, byte(len(long))}, long...))
	if f.Control != "gap" || f.Requested != "1-0" || f.Oldest != "5-0" {
		t.Fatalf("decoded %+v", f)
	}
}

func TestRecord(t *testing.T) {
	var fs Frames
	fs.Record(t, [][]byte{[]byte("\x81\x0c{\"id\":\"1-0\"}"), []byte("\x81\x0c{\"id\":\"2-0\"}")})
	if got := fs.IDs(); !slices.Equal(got, []string{"1-0", "2-0"}) {
		t.Fatalf("recorded %v", got)
	}
}

func TestParseUnparseable(t *testing.T) {
	f, err := Parse([]byte("not json"))
	if err == nil || f.Control != "unparseable" || f.Raw != "not json" {
		t.Fatalf("got %+v, %v", f, err)
	}
}

func TestFrames(t *testing.T) {
	fs := Frames{{ID: "1-0"}, {Control: "caught_up", Last: "1-0"}, {ID: "2-0"}, {Control: "cursor", Last: "2-0"}}
	if got := fs.IDs(); !slices.Equal(got, []string{"1-0", "2-0"}) {
		t.Fatalf("IDs %v", got)
	}
	if got := fs.Controls("caught_up"); len(got) != 1 || got[0].Last != "1-0" {
		t.Fatalf("Controls %v", got)
	}
	if got, want := fs.String(), "1-0 caught_up(last=1-0 req= old=) 2-0 cursor(last=2-0 req= old=) "; got != want {
		t.Fatalf("String %q, want %q", got, want)
	}
}

func TestPeer(t *testing.T) {
	p := NewPeer()
	p.Wake()
	p.Wake() // collapses into the first
	<-p.Woken()
	select {
	case <-p.Woken():
		t.Fatal("two wakes not received were not collapsed")
	default:
	}
	p.Close(1013, "slow")
	p.Close(1001, "shutdown")
	if code, reason := p.Closed(); code != 1013 || reason != "slow" {
		t.Fatalf("Closed %d %q, want the first close", code, reason)
	}
}

package streams

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// entry is one stream entry as the Subscriber delivers it: its id and its
// fields as name, value pairs in reply order (nil for a pending entry trimmed
// since, which Redis 7 returns without fields).
type entry struct {
	id     string
	fields []string
}

// replyError is an error reply of Redis (its text without the leading "-"),
// so that isNoGroup and logs see what go-redis would have returned.
type replyError string

func (e replyError) Error() string { return string(e) }

// keyCache interns field names, which repeat in every entry of a stream: a
// known name costs a map lookup and no allocation. It is bounded so that a
// producer writing ever new field names cannot grow it without limit.
type keyCache map[string]string

const maxCachedKeys = 64

func (k keyCache) intern(b []byte) string {
	if s, ok := k[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if len(k) < maxCachedKeys && len(s) <= 64 {
		k[s] = s
	}
	return s
}

// parseXRead parses the raw RESP2 or RESP3 reply of XREADGROUP on one stream
// into entries, appending to dst. Every value is a string of its own (never a
// slice of the reply), so whatever keeps a value, such as an event's
// recipients in the window, keeps exactly that and not the whole reply; field
// names come from keys. fields of all entries share one slab per call. A
// null reply (nothing to read) yields dst unchanged.
func parseXRead(raw []byte, keys keyCache, dst []entry) ([]entry, error) {
	p := respParser{b: raw}
	kind, n, err := p.header()
	if err != nil {
		return dst, err
	}
	if n < 0 { // null: BLOCK timed out or nothing pending
		return dst, p.end()
	}
	if kind != '*' && kind != '%' {
		return dst, p.errorf("want an array or map of streams, got %q", kind)
	}
	if n != 1 {
		return dst, p.errorf("want 1 stream, got %d", n)
	}
	if kind == '*' { // RESP2: [[name, entries]]
		if _, m, err := p.header(); err != nil {
			return dst, err
		} else if m != 2 {
			return dst, p.errorf("want a stream pair, got %d items", m)
		}
	}
	if _, err := p.bulk(); err != nil { // the stream name
		return dst, err
	}
	_, count, err := p.header()
	if err != nil {
		return dst, err
	}
	if count <= 0 {
		return dst, p.end()
	}
	dst = slicesGrow(dst, count)
	var slab []string
	for i := range count {
		_, m, err := p.header()
		if err != nil {
			return dst, err
		}
		if m != 2 && m != 4 { // 4 with XREADGROUP CLAIM's delivery metadata
			return dst, p.errorf("want an entry of 2 or 4 items, got %d", m)
		}
		idb, err := p.bulk()
		if err != nil {
			return dst, err
		}
		e := entry{id: string(idb)}
		kind, nf, err := p.header()
		if err != nil {
			return dst, err
		}
		if kind == '%' {
			nf *= 2
		}
		if nf > 0 {
			if nf%2 != 0 {
				return dst, p.errorf("odd field count %d", nf)
			}
			if cap(slab)-len(slab) < nf {
				// Room for this entry and as many more of its size.
				slab = make([]string, 0, nf*(count-i))
			}
			start := len(slab)
			for i := 0; i < nf; i += 2 {
				kb, err := p.bulk()
				if err != nil {
					return dst, err
				}
				vb, err := p.bulk()
				if err != nil {
					return dst, err
				}
				slab = append(slab, keys.intern(kb), string(vb))
			}
			e.fields = slab[start:len(slab):len(slab)]
		}
		for range m - 2 {
			if err := p.skipScalar(); err != nil {
				return dst, err
			}
		}
		dst = append(dst, e)
	}
	return dst, p.end()
}

func slicesGrow(s []entry, n int) []entry {
	if cap(s)-len(s) >= n {
		return s
	}
	out := make([]entry, len(s), len(s)+n)
	copy(out, s)
	return out
}

// respParser walks one RESP reply held in b.
type respParser struct {
	b   []byte
	off int
}

var errShortReply = errors.New("streams: truncated XREADGROUP reply")

func (p *respParser) errorf(format string, args ...any) error {
	return fmt.Errorf("streams: unexpected XREADGROUP reply at byte %d: %s", p.off, fmt.Sprintf(format, args...))
}

// line returns the next line without its CRLF.
func (p *respParser) line() ([]byte, error) {
	i := bytes.IndexByte(p.b[p.off:], '\n')
	if i < 1 || p.b[p.off+i-1] != '\r' {
		return nil, errShortReply
	}
	i-- // at the CR
	l := p.b[p.off : p.off+i]
	p.off += i + 2
	if len(l) == 0 {
		return nil, p.errorf("empty line")
	}
	return l, nil
}

// header reads a type byte and its length: -1 for the nulls of RESP2 ($-1,
// *-1) and RESP3 (_). Error replies are returned as errors.
func (p *respParser) header() (kind byte, n int, err error) {
	l, err := p.line()
	if err != nil {
		return 0, 0, err
	}
	kind = l[0]
	switch kind {
	case '-':
		return kind, 0, replyError(l[1:])
	case '!': // RESP3 blob error
		n, err := strconv.Atoi(string(l[1:]))
		if err != nil || n < 0 || p.off+n+2 > len(p.b) {
			return kind, 0, errShortReply
		}
		msg := p.b[p.off : p.off+n]
		p.off += n + 2
		return kind, 0, replyError(msg)
	case '_':
		return kind, -1, nil
	case '*', '%', '$', '~':
		n, err := strconv.Atoi(string(l[1:]))
		if err != nil || n < -1 {
			return kind, 0, p.errorf("bad length %q", l)
		}
		return kind, n, nil
	}
	return kind, 0, p.errorf("unexpected type %q", kind)
}

// bulk reads a bulk string (or a simple string or an integer, as text).
func (p *respParser) bulk() ([]byte, error) {
	if p.off < len(p.b) && (p.b[p.off] == '+' || p.b[p.off] == ':') {
		l, err := p.line()
		if err != nil {
			return nil, err
		}
		return l[1:], nil
	}
	kind, n, err := p.header()
	if err != nil {
		return nil, err
	}
	if kind != '$' || n < 0 {
		return nil, p.errorf("want a string, got %q (length %d)", kind, n)
	}
	if p.off+n+2 > len(p.b) {
		return nil, errShortReply
	}
	s := p.b[p.off : p.off+n]
	p.off += n + 2
	return s, nil
}

// skipScalar skips one integer or string.
func (p *respParser) skipScalar() error {
	if p.off < len(p.b) && p.b[p.off] == ':' {
		_, err := p.line()
		return err
	}
	_, err := p.bulk()
	return err
}

func (p *respParser) end() error {
	if p.off != len(p.b) {
		return p.errorf("%d bytes after the reply", len(p.b)-p.off)
	}
	return nil
}

// entriesOf converts go-redis's parsed entries (the blocking read) into
// entries.
func entriesOf(msgs []redis.XMessage, dst []entry) []entry {
	for _, m := range msgs {
		e := entry{id: m.ID}
		if len(m.Values) > 0 {
			e.fields = make([]string, 0, 2*len(m.Values))
			for k, v := range m.Values {
				if s, ok := v.(string); ok {
					e.fields = append(e.fields, k, s)
				}
			}
		}
		dst = append(dst, e)
	}
	return dst
}

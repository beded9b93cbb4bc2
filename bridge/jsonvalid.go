package bridge

import (
	"encoding/binary"
	"math/bits"
)

// maxJSONDepth is encoding/json's nesting limit (scanner.go maxNestingDepth):
// 10000 open objects and arrays are accepted, the 10001st is an error.
const maxJSONDepth = 10000

// validJSONText reports whether s is exactly what
// utf8.ValidString(s) && json.Valid([]byte(s)) accepts: one RFC 8259 value
// with optional surrounding whitespace, valid UTF-8 throughout, nesting at
// most maxJSONDepth (as encoding/json). Like encoding/json it accepts \u
// escapes of lone surrogates. It does not allocate and does not recurse: the
// open levels are a depth counter plus one bit each (object or array), one
// word on the stack for the first 64 levels; deeper text is checked again
// with a fixed 1.25 KiB bit array.
//
// Outside strings every valid byte is ASCII, so UTF-8 is checked only inside
// strings; runs of plain ASCII in them are skipped by table, then eight bytes
// at a time.
func validJSONText(s string) bool {
	// Most data nests at most 64 levels: one word of kinds, nothing to
	// zero. Deeper text is checked again with the full stack, so no input
	// costs more than two passes.
	var kinds [1]uint64
	ok, deeper := validJSONLevels(s, kinds[:])
	if deeper {
		return validJSONTextDeep(s)
	}
	return ok
}

//go:noinline
func validJSONTextDeep(s string) bool {
	var kinds [(maxJSONDepth + 63) / 64]uint64
	ok, _ := validJSONLevels(s, kinds[:])
	return ok
}

// validJSONLevels is validJSONText with one bit of kinds per open level (set:
// object). If s nests deeper than kinds holds and maxJSONDepth allows, it
// returns deeper.
func validJSONLevels(s string, kinds []uint64) (ok, deeper bool) {
	limit := min(len(kinds)*64, maxJSONDepth)
	depth := 0
	inObject := false // the innermost open level is an object
	i, n := 0, len(s)
	for {
		// A value starts at i, after optional whitespace. Cases in order
		// of how often they come.
		if i < n && s[i] <= ' ' {
			i = skipJSONSpace(s, i)
		}
		if i >= n {
			return false, false
		}
		c := s[i]
		switch {
		case c == '"':
			i++
			for k := min(i+16, n); i < k && !jsonStrStop[s[i]]; {
				i++
			}
			if i < n && s[i] == '"' {
				i++
			} else if i = scanJSONString(s, i); i < 0 {
				return false, false
			}
		case c >= '1' && c <= '9':
			// A plain integer inline; anything more goes the full way.
			j := i + 1
			for j < n && isDigit(s[j]) {
				j++
			}
			if j < n && (s[j] == '.' || s[j]|0x20 == 'e') {
				if j = scanJSONNumber(s, i); j < 0 {
					return false, false
				}
			}
			i = j
		case c == '{' || c == '[':
			if depth == limit {
				return false, limit < maxJSONDepth
			}
			inObject = c == '{'
			bit := uint64(1) << (depth & 63)
			if inObject {
				kinds[depth>>6] |= bit
			} else {
				kinds[depth>>6] &^= bit
			}
			depth++
			i++
			if i < n && s[i] <= ' ' {
				i = skipJSONSpace(s, i)
			}
			if i < n && s[i] == c+2 { // '{'+2 == '}', '['+2 == ']'
				i++
				depth--
				if depth > 0 {
					inObject = kinds[(depth-1)>>6]>>((depth-1)&63)&1 != 0
				}
				break
			}
			if inObject {
				if i = scanJSONKey(s, i); i < 0 {
					return false, false
				}
			}
			continue
		case c == '-' || c == '0':
			if i = scanJSONNumber(s, i); i < 0 {
				return false, false
			}
		case c == 't':
			if n-i < 4 || s[i:i+4] != "true" {
				return false, false
			}
			i += 4
		case c == 'f':
			if n-i < 5 || s[i:i+5] != "false" {
				return false, false
			}
			i += 5
		case c == 'n':
			if n-i < 4 || s[i:i+4] != "null" {
				return false, false
			}
			i += 4
		default:
			return false, false
		}
		// A value ended just before i: close levels until the next element
		// starts or the text ends.
		for {
			if i < n && s[i] <= ' ' {
				i = skipJSONSpace(s, i)
			}
			if i >= n {
				return depth == 0, false
			}
			if depth == 0 {
				return false, false
			}
			c := s[i]
			i++
			if c == ',' {
				if inObject {
					if i = scanJSONKey(s, i); i < 0 {
						return false, false
					}
				}
				break
			}
			if (inObject && c == '}') || (!inObject && c == ']') {
				depth--
				if depth > 0 {
					inObject = kinds[(depth-1)>>6]>>((depth-1)&63)&1 != 0
				}
				continue
			}
			return false, false
		}
	}
}

func skipJSONSpace(s string, i int) int {
	for i < len(s) {
		c := s[i]
		if c > ' ' || (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			return i
		}
		i++
	}
	return i
}

// scanJSONKey scans `"key" :` starting at i (whitespace allowed before) and
// returns the index after the colon, or -1.
func scanJSONKey(s string, i int) int {
	if i < len(s) && s[i] <= ' ' {
		i = skipJSONSpace(s, i)
	}
	if i >= len(s) || s[i] != '"' {
		return -1
	}
	// Keys are short: their plain ASCII is skipped here and only the rest
	// of a longer or escaped one goes to scanJSONString.
	i++
	for k := min(i+16, len(s)); i < k && !jsonStrStop[s[i]]; {
		i++
	}
	if i < len(s) && s[i] == '"' {
		i++
	} else if i = scanJSONString(s, i); i < 0 {
		return -1
	}
	if i < len(s) && s[i] == ':' {
		return i + 1
	}
	i = skipJSONSpace(s, i)
	if i >= len(s) || s[i] != ':' {
		return -1
	}
	return i + 1
}

// plainASCIIStops flags (high bit of each byte) where x holds a quote, a
// backslash, a control character or a byte ≥ 0x80. The lowest flag is
// exact (borrows only run upwards from a byte that matched), so
// TrailingZeros64/8 is the first byte to look at; higher flags may be false.
func plainASCIIStops(x uint64) uint64 {
	q := x ^ (lsb8 * '"')
	e := x ^ (lsb8 * '\\')
	return (((q - lsb8) &^ q) | ((e - lsb8) &^ e) | (x - lsb8*0x20) | x) & msb8
}

const (
	lsb8 = 0x0101010101010101
	msb8 = 0x8080808080808080
)

// jsonStrStop marks the bytes a string scan must look at: the quote, the
// backslash, control characters and the bytes of non-ASCII UTF-8.
var jsonStrStop = func() (t [256]bool) {
	for c := range t {
		t[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80
	}
	return t
}()

// scanJSONString scans a string's contents from i (just after the opening
// quote) and returns the index after the closing quote, or -1.
func scanJSONString(s string, i int) int {
	n := len(s)
	b := unsafeBytes(s)
	for {
		// Byte by byte first: most keys and values are short, and a byte
		// loop's well-predicted branches beat the longer dependency chain
		// of the word test. Longer runs of plain ASCII go eight bytes at a
		// time.
		k := min(i+16, n)
		for i < k && !jsonStrStop[s[i]] {
			i++
		}
		if i == k {
			for n-i >= 8 {
				if m := plainASCIIStops(binary.LittleEndian.Uint64(b[i:])); m != 0 {
					i += bits.TrailingZeros64(m) >> 3
					break
				}
				i += 8
			}
			for i < n && !jsonStrStop[s[i]] {
				i++
			}
		}
		if i >= n {
			return -1
		}
		c := s[i]
		switch {
		case c == '"':
			return i + 1
		case c == '\\':
			i++
			if i >= n {
				return -1
			}
			switch s[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if n-i < 5 || !isHex(s[i+1]) || !isHex(s[i+2]) || !isHex(s[i+3]) || !isHex(s[i+4]) {
					return -1
				}
				i += 5
			default:
				return -1
			}
		case c < 0x20:
			return -1
		case c < 0x80:
			i++ // plain ASCII; not reached, the scans stop only at the bytes above
		default:
			size := utf8SeqLen(s, i)
			if size == 0 {
				return -1
			}
			i += size
		}
	}
}

// utf8SeqLen returns the length of the valid UTF-8 sequence at s[i] (whose
// lead byte is ≥ 0x80), or 0 if it is invalid: overlong forms, surrogates
// (U+D800–U+DFFF) and values above U+10FFFF are invalid, as for
// utf8.ValidString.
func utf8SeqLen(s string, i int) int {
	n := len(s)
	c := s[i]
	switch {
	case c >= 0xC2 && c <= 0xDF:
		if n-i >= 2 && isCont(s[i+1]) {
			return 2
		}
	case c >= 0xE0 && c <= 0xEF:
		if n-i < 3 {
			return 0
		}
		c1 := s[i+1]
		lo, hi := byte(0x80), byte(0xBF)
		if c == 0xE0 {
			lo = 0xA0
		} else if c == 0xED {
			hi = 0x9F
		}
		if c1 >= lo && c1 <= hi && isCont(s[i+2]) {
			return 3
		}
	case c >= 0xF0 && c <= 0xF4:
		if n-i < 4 {
			return 0
		}
		c1 := s[i+1]
		lo, hi := byte(0x80), byte(0xBF)
		if c == 0xF0 {
			lo = 0x90
		} else if c == 0xF4 {
			hi = 0x8F
		}
		if c1 >= lo && c1 <= hi && isCont(s[i+2]) && isCont(s[i+3]) {
			return 4
		}
	}
	return 0
}

func isCont(c byte) bool { return c&0xC0 == 0x80 }

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'f')
}

// scanJSONNumber scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at i
// and returns the index after it, or -1. What follows is checked by the caller.
func scanJSONNumber(s string, i int) int {
	n := len(s)
	if s[i] == '-' {
		i++
		if i >= n {
			return -1
		}
	}
	switch c := s[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		i++
		for i < n && isDigit(s[i]) {
			i++
		}
	default:
		return -1
	}
	if i < n && s[i] == '.' {
		i++
		if i >= n || !isDigit(s[i]) {
			return -1
		}
		for i < n && isDigit(s[i]) {
			i++
		}
	}
	if i < n && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < n && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= n || !isDigit(s[i]) {
			return -1
		}
		for i < n && isDigit(s[i]) {
			i++
		}
	}
	return i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

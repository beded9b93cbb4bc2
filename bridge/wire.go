package bridge

import (
	"encoding/binary"
	"unsafe"
)

// The window stores each event as the exact bytes a connection writes, so the
// server-to-client frame header (RFC 6455 §5.2: FIN, opcode text, no mask) is
// built here once per event instead of once per write.

// TextFrameHeaderLen is the header size of an unmasked text frame carrying n
// payload bytes.
func TextFrameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xFFFF:
		return 4
	default:
		return 10
	}
}

// AppendTextFrameHeader appends the header of a final, unmasked text frame.
func AppendTextFrameHeader(b []byte, n int) []byte {
	const finText = 0x81
	switch {
	case n < 126:
		return append(b, finText, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, finText, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, finText, 127), uint64(n))
	}
}

// AppendTextFrame appends a whole text frame carrying payload.
func AppendTextFrame(b, payload []byte) []byte {
	return append(AppendTextFrameHeader(b, len(payload)), payload...)
}

// unsafeBytes views s as bytes for read-only checks; callers never write.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// controlFrame1 builds {"control":kind,key:"id"} as a text frame.
func controlFrame1(kind, key string, id ID) []byte {
	var p [128]byte
	b := append(p[:0], `{"control":"`...)
	b = append(b, kind...)
	b = append(b, `","`...)
	b = append(b, key...)
	b = append(b, `":"`...)
	b = id.AppendTo(b)
	b = append(b, `"}`...)
	return AppendTextFrame(make([]byte, 0, 2+len(b)), b)
}

// controlFrame builds {"control":kind,k1:"id1",k2:"id2"} as a text frame.
func controlFrame(kind, k1 string, id1 ID, k2 string, id2 ID) []byte {
	var p [192]byte
	b := append(p[:0], `{"control":"`...)
	b = append(b, kind...)
	b = append(b, `","`...)
	b = append(b, k1...)
	b = append(b, `":"`...)
	b = id1.AppendTo(b)
	b = append(b, `","`...)
	b = append(b, k2...)
	b = append(b, `":"`...)
	b = id2.AppendTo(b)
	b = append(b, `"}`...)
	return AppendTextFrame(make([]byte, 0, 2+len(b)), b)
}

// frameMs reads the id time of an event frame without decoding JSON.
func frameMs(f []byte) (uint64, bool) {
	const prefix = `{"id":"`
	h := TextFrameHeaderLen(0)
	if len(f) > 1 {
		switch f[1] & 0x7f {
		case 126:
			h = 4
		case 127:
			h = 10
		}
	}
	if len(f) < h+len(prefix) || string(f[h:h+len(prefix)]) != prefix {
		return 0, false
	}
	var ms uint64
	i := h + len(prefix)
	for ; i < len(f) && f[i] >= '0' && f[i] <= '9'; i++ {
		ms = ms*10 + uint64(f[i]-'0')
	}
	return ms, i < len(f) && f[i] == '-'
}

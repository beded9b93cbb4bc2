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

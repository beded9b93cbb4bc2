package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The value types below remember the text they were given and defer their
// parse error to Validate, so one run reports every bad setting, each named
// as users write it, instead of stopping at the first flag the parser saw.

// Size is a byte count written as a number or with a unit (512KiB, 64MiB, 1GiB, 10kB, 5MB).
type Size struct {
	Bytes int64
	raw   string
	err   error
}

// NewSize returns a Size of n bytes.
func NewSize(n int64) Size { return Size{Bytes: n} }

func (s *Size) Set(v string) error {
	s.raw = v
	s.Bytes, s.err = ParseSize(v)
	return nil
}

func (s *Size) String() string {
	if s == nil {
		return ""
	}
	if s.raw != "" {
		return s.raw
	}
	return FormatSize(s.Bytes)
}

var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}, {"KB", 1e3}, {"B", 1},
}

// ParseSize parses a byte count with an optional unit.
func ParseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	factor := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, factor = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/factor {
		return 0, fmt.Errorf("must be a positive size such as 65536, 512KiB or 64MiB, got %q", v)
	}
	return n * factor, nil
}

// FormatSize writes n with the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range sizeUnits[:3] {
		if n >= u.factor && n%u.factor == 0 {
			return strconv.FormatInt(n/u.factor, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// Duration is a Go duration (10s, 1m30s).
type Duration struct {
	time.Duration
	raw string
	err error
}

// NewDuration returns a Duration of d.
func NewDuration(d time.Duration) Duration { return Duration{Duration: d} }

func (d *Duration) Set(v string) error {
	d.raw = v
	d.Duration, d.err = time.ParseDuration(strings.TrimSpace(v))
	if d.err != nil {
		d.err = fmt.Errorf("must be a duration such as 10s or 1m30s, got %q", v)
	}
	return nil
}

func (d *Duration) String() string {
	if d == nil {
		return ""
	}
	return d.Duration.String()
}

// Int is a whole number.
type Int struct {
	N   int
	raw string
	err error
}

// NewInt returns an Int of n.
func NewInt(n int) Int { return Int{N: n} }

func (i *Int) Set(v string) error {
	i.raw = v
	n, err := strconv.Atoi(strings.TrimSpace(v))
	i.N, i.err = n, nil
	if err != nil {
		i.err = fmt.Errorf("must be a whole number, got %q", v)
	}
	return nil
}

func (i *Int) String() string {
	if i == nil {
		return ""
	}
	return strconv.Itoa(i.N)
}

// Bool is true/false (also 1/0, yes/no, on/off).
type Bool struct {
	B   bool
	raw string
	err error
}

func (b *Bool) Set(v string) error {
	b.raw = v
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "t", "true", "yes", "on":
		b.B, b.err = true, nil
	case "0", "f", "false", "no", "off":
		b.B, b.err = false, nil
	default:
		b.err = fmt.Errorf("must be true or false, got %q", v)
	}
	return nil
}

func (b *Bool) String() string {
	if b == nil {
		return "false"
	}
	return strconv.FormatBool(b.B)
}

// IsBoolFlag lets `--pprof` stand alone on the command line.
func (b *Bool) IsBoolFlag() bool { return true }

// Retention bounds the stream: a duration trims by MINID, a count by MAXLEN ~,
// "off" leaves trimming to producers.
type Retention struct {
	MaxAge time.Duration
	MaxLen int64
	raw    string
	err    error
}

func (r *Retention) Set(v string) error {
	r.raw, r.err, r.MaxAge, r.MaxLen = v, nil, 0, 0
	s := strings.TrimSpace(v)
	if s == "off" {
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			r.err = fmt.Errorf("must be > 0 (a duration such as 24h, an entry count such as 1000000, or off), got %q", v)
		}
		r.MaxLen = n
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		r.err = fmt.Errorf("must be a duration such as 24h, an entry count such as 1000000, or off, got %q", v)
		return nil
	}
	r.MaxAge = d
	return nil
}

func (r *Retention) String() string {
	if r == nil {
		return ""
	}
	switch {
	case r.MaxAge > 0:
		return r.MaxAge.String()
	case r.MaxLen > 0:
		return strconv.FormatInt(r.MaxLen, 10)
	}
	return "off"
}

// Off reports whether the bridge leaves trimming to producers.
func (r Retention) Off() bool { return r.MaxAge == 0 && r.MaxLen == 0 }

var errNotPositive = errors.New("must be > 0")

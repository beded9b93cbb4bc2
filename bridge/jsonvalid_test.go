package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// refValidJSON is the rule validJSONText must match exactly.
func refValidJSON(s string) bool { return utf8.ValidString(s) && json.Valid([]byte(s)) }

func TestValidJSONText(t *testing.T) {
	cases := []struct {
		in   string
		want bool
	}{
		// Empty, whitespace, literals.
		{"", false},
		{" ", false},
		{" \t\r\n", false},
		{"\f1", false}, // form feed is not JSON whitespace
		{"1\v", false},
		{" 1 ", true},
		{"\n\t{}\r\n", true},
		{"true", true},
		{"false", true},
		{"null", true},
		{"tru", false},
		{"truee", false},
		{"True", false},
		{"nul", false},
		{"nulll", false},
		{"fals", false},
		{"true false", false},
		{"\ufeff{}", false}, // BOM

		// Numbers.
		{"0", true},
		{"-0", true},
		{"-", false},
		{"+1", false},
		{"01", false},
		{"-01", false},
		{"00", false},
		{"1.", false},
		{".1", false},
		{"1.5", true},
		{"-1.5e10", true},
		{"1e", false},
		{"1e+", false},
		{"1e-5", true},
		{"1E+05", true},
		{"1.e5", false},
		{"0.0e0", true},
		{"1ee5", false},
		{"0x1", false},
		{"1_000", false},
		{"123456789012345678901234567890", true},
		{"-a", false},
		{"[-]", false},
		{"[1,]", false},
		{"[01]", false},
		{"[1 2]", false},
		{"NaN", false},
		{"Infinity", false},
		{"-Infinity", false},

		// Strings and escapes.
		{`""`, true},
		{`"`, false},
		{`"abc`, false},
		{`"a\"b"`, true},
		{`"\\"`, true},
		{`"\/\b\f\n\r\t"`, true},
		{`"\a"`, false},
		{`"\'"`, false},
		{`"\x41"`, false},
		{`"\u0041"`, true},
		{`"\u00e9\u00E9"`, true},
		{`"\u004"`, false},
		{`"\u004g"`, false},
		{`"\u"`, false},
		{`"\U0041"`, false},
		{`"\ud800"`, true},       // lone high surrogate: json.Valid accepts it
		{`"\udc00"`, true},       // lone low surrogate
		{`"\udbff\udfff"`, true}, // a pair
		{`"\ud800\u0041"`, true}, // broken pair
		{`"\`, false},
		{`"\"`, false},
		{"\"a\x00b\"", false},
		{"\"a\x1fb\"", false},
		{"\"a\tb\"", false},
		{"\"a\nb\"", false},
		{"\"a\x7fb\"", true}, // DEL is allowed
		{"\"0123456789abcdef\"", true},
		{"\"0123456\"89abcdef\"", false},
		{"\"01234567\\\"9abcdef\"", true},

		// UTF-8.
		{`"é"`, true},
		{`"日本語"`, true},
		{`"😀"`, true},
		{"\"\xff\"", false},
		{"\"\xc3\"", false},
		{"\"\xc3(\"", false},
		{"\"\xc0\x80\"", false},         // overlong NUL
		{"\"\xc1\xbf\"", false},         // overlong
		{"\"\xe0\x80\xaf\"", false},     // overlong '/'
		{"\"\xe0\xa0\x80\"", true},      // U+0800
		{"\"\xed\xa0\x80\"", false},     // encoded surrogate U+D800
		{"\"\xed\x9f\xbf\"", true},      // U+D7FF
		{"\"\xee\x80\x80\"", true},      // U+E000
		{"\"\xef\xbf\xbd\"", true},      // U+FFFD itself
		{"\"\xf0\x8f\xbf\xbf\"", false}, // overlong
		{"\"\xf0\x90\x80\x80\"", true},  // U+10000
		{"\"\xf4\x8f\xbf\xbf\"", true},  // U+10FFFF
		{"\"\xf4\x90\x80\x80\"", false}, // above U+10FFFF
		{"\"\xf5\x80\x80\x80\"", false},
		{"\"\xe2\x82\"", false}, // truncated before the quote
		{"\"\xe2\x82", false},
		{"\"abcdefgh\xe2\x82\xac\"", true},
		{"\"abcdefg\x80\"", false},
		{"1\xff", false},
		{"\xff", false},
		{"{\"a\":1}\xc3", false},

		// Objects and arrays.
		{"{}", true},
		{"[]", true},
		{"{ }", true},
		{"[ ]", true},
		{"{", false},
		{"[", false},
		{"}", false},
		{"]", false},
		{"[}", false},
		{"{]", false},
		{`{"a"}`, false},
		{`{"a":}`, false},
		{`{"a":1,}`, false},
		{`{"a":1 "b":2}`, false},
		{`{"a" : 1 , "b" : [ 1 , { } , [ ] ] }`, true},
		{`{a:1}`, false},
		{`{'a':1}`, false},
		{`{1:1}`, false},
		{`{"a":1}}`, false},
		{`[1]]`, false},
		{`[[1]`, false},
		{`{"a":[1,2,{"b":null}],"c":"d"}`, true},
		{`[1,2,3,]`, false},
		{`[,1]`, false},
		{`{,}`, false},
		{`{"a":1}{}`, false},
		{`[] []`, false},
		{`{"a":1} x`, false},
		{`[1] // c`, false},
	}
	for _, c := range cases {
		if ref := refValidJSON(c.in); ref != c.want {
			t.Errorf("table is wrong for %q: reference says %v", c.in, ref)
		}
		if got := validJSONText(c.in); got != c.want {
			t.Errorf("validJSONText(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestValidJSONTextDepth(t *testing.T) {
	for _, d := range []int{1, 63, 64, 65, 128, 9999, maxJSONDepth, maxJSONDepth + 1, maxJSONDepth + 100} {
		for name, mk := range map[string]func(int) string{
			"arrays":  func(d int) string { return strings.Repeat("[", d) + strings.Repeat("]", d) },
			"objects": func(d int) string { return strings.Repeat(`{"k":`, d-1) + "{}" + strings.Repeat("}", d-1) },
			"mixed": func(d int) string {
				var open, close strings.Builder
				for i := range d {
					if i%3 == 1 {
						open.WriteString(`{"k":`)
						close.WriteString("}")
					} else {
						open.WriteString("[1,")
						close.WriteString("]")
					}
				}
				c := close.String()
				// Close in reverse order of opening.
				r := []byte(c)
				for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
					r[i], r[j] = r[j], r[i]
				}
				return open.String() + "0" + string(r)
			},
			"unclosed": func(d int) string { return strings.Repeat("[", d) },
		} {
			s := mk(d)
			want := refValidJSON(s)
			if name != "unclosed" && want != (d <= maxJSONDepth) {
				t.Fatalf("%s depth %d: reference says %v", name, d, want)
			}
			if got := validJSONText(s); got != want {
				t.Errorf("%s depth %d: validJSONText = %v, json.Valid = %v", name, d, got, want)
			}
		}
	}
}

// TestValidJSONTextTruncations checks every prefix and every single-byte
// corruption of a varied document against the reference.
func TestValidJSONTextTruncations(t *testing.T) {
	doc := ` {"id":"a\"b\\c\u00e9\ud83d\ude00","n":[0,-1.25e+3,12E-01,true,false,null],` +
		`"s":"日本語 text with ASCII runs longer than eight bytes","o":{"x":{},"y":[]}} `
	for i := 0; i <= len(doc); i++ {
		s := doc[:i]
		if got, want := validJSONText(s), refValidJSON(s); got != want {
			t.Errorf("prefix %q: got %v, want %v", s, got, want)
		}
	}
	subs := []byte("\x00\x1f \"\\/0-.eE+u{}[],:xtf\x80\xc3\xed\xff")
	buf := []byte(doc)
	for i := range buf {
		orig := buf[i]
		for _, c := range subs {
			buf[i] = c
			s := string(buf)
			if got, want := validJSONText(s), refValidJSON(s); got != want {
				t.Errorf("%q: got %v, want %v", s, got, want)
			}
		}
		buf[i] = orig
	}
}

func TestValidJSONTextAllocs(t *testing.T) {
	s := benchJSON1K
	if n := testing.AllocsPerRun(100, func() { validJSONText(s) }); n != 0 {
		t.Fatalf("allocs per run = %v, want 0", n)
	}
}

func TestValidateDataReasons(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"{\"a\":\"\xff\"}", "not valid UTF-8"},
		{"{\"a\":1,}\xff", "not valid UTF-8"},
		{`{"a":1,}`, "not valid JSON"},
		{`[1]`, ""},
	} {
		err := validateData(c.in, 1<<16)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: error %v, want %q", c.in, err, c.want)
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{
		"", " ", "{}", "[]", `{"a":[1,2,{"b":null}],"c":"d"}`, "-0.5e-3", "01", "1.", `"\ud800"`,
		"\"\xed\xa0\x80\"", "\"\xff\"", "\"a\x01\"", `[1,]`, "[[[[[[[[]]]]]]]]", `{"a":1} x`,
		benchJSON200, benchJSONStrings,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validJSONText(s), refValidJSON(s); got != want {
			t.Fatalf("validJSONText(%q) = %v, utf8.ValidString && json.Valid = %v", s, got, want)
		}
	})
}

// Realistic entry data: an alarm object of about 200 B, one of about 1 KiB,
// a string-heavy one (long text with escapes and non-ASCII), and the 1 KiB
// data of the ingest benchmark (handlers/ingest_bench_test.go: one long
// plain string).
var (
	benchJSON200 = `{"alarm":"fiber_break","severity":"critical","site":"PAR-07","port":12,` +
		`"olt":"olt-par07-03","since":"2026-11-25T14:05:12.345Z","customers":184,"ack":false,"ref":null,"region":"idf-nord","ip":"10.4.7.3"}`
	benchJSON1K = func() string {
		var b strings.Builder
		b.WriteString(`{"alarm":"fiber_break","severity":"critical","site":"PAR-07","since":"2026-11-25T14:05:12.345Z",`)
		b.WriteString(`"location":{"lat":48.85661,"lon":2.35222,"address":"12 rue de la Paix, 75002 Paris"},"ports":[`)
		for i := range 9 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"olt":"olt-par07-03","slot":2,"port":`)
			b.WriteString(string(rune('1' + i)))
			b.WriteString(`,"onts":24,"rx_dbm":-27.5,"down":true}`)
		}
		b.WriteString(`],"team":"Equipe nord B","ticket":"INC-2026-11-25-0042","eta_min":45,"sla":"gold",`)
		b.WriteString(`"note":"Técnico en camino","ack":false,"ref":null}`)
		return b.String()
	}()
	benchJSONStrings = `{"title":"Coupure fibre – secteur Nord","body":"Une coupure de fibre a été détectée entre ` +
		`le nœud PAR-07 et le répartiteur \"Nord-2\". Les équipes sont en route ; délai estimé : 2 h.\n` +
		`Impacted customers are being notified by SMS and e-mail. Please do not reopen tickets ` +
		`for this incident.\tRef: INC-2026-11-25-0042. 日本語のお客様にも通知済みです。 Status page: ` +
		`https:\/\/status.example.net\/incidents\/42 \u2014 updates every 30 minutes.","tags":["fiber","north","outage"]}`
)

func BenchmarkValidJSON(b *testing.B) {
	for _, c := range []struct{ name, s string }{
		{"200B", benchJSON200},
		{"1KiB", benchJSON1K},
		{"strings", benchJSONStrings},
		{"ingest1KiB", `{"fiber":"F-12","km":3.2,"note":"` + strings.Repeat("x", 1024-34) + `"}`},
	} {
		if !refValidJSON(c.s) {
			b.Fatalf("%s: bench input is not valid", c.name)
		}
		b.Run(c.name+"/validJSONText", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.s)))
			for b.Loop() {
				if !validJSONText(c.s) {
					b.Fatal("invalid")
				}
			}
		})
		b.Run(c.name+"/json.Valid", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.s)))
			p := unsafeBytes(c.s)
			for b.Loop() {
				if !utf8.ValidString(c.s) || !json.Valid(p) {
					b.Fatal("invalid")
				}
			}
		})
	}
}

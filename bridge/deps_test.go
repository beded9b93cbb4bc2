package bridge_test

import (
	"go/build"
	"strings"
	"testing"
)

// The publisher imports bridge to validate entries (docs/design.md, "The
// contract model stays in bridge/"): bridge may import the standard library
// and zap only.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		first, _, _ := strings.Cut(imp, "/")
		if strings.Contains(first, ".") && imp != "go.uber.org/zap" {
			t.Errorf("bridge imports %s: a producer importing the publisher would carry it", imp)
		}
	}
}

// Package deploy holds deployment examples; its test checks that every
// manifest parses and names only settings the binary knows.
package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/notifybridge/notifybridge/config"
)

func TestManifestsParseAndUseKnownSettings(t *testing.T) {
	files, _ := filepath.Glob("*.yaml")
	more, _ := filepath.Glob("kubernetes/*.yaml")
	files = append(files, more...)
	if len(files) < 2 {
		t.Fatalf("manifests not found: %v", files)
	}
	known := map[string]bool{}
	for _, n := range config.Default().Names() {
		known[config.EnvName(n)] = true
	}
	envRe := regexp.MustCompile(`BRIDGE_[A-Z_]+`)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(raw)))
		for i := 0; ; i++ {
			var doc any
			err := dec.Decode(&doc)
			if err != nil {
				if err.Error() == "EOF" {
					break
				}
				t.Fatalf("%s document %d: %v", f, i, err)
			}
		}
		for _, v := range envRe.FindAllString(string(raw), -1) {
			if !known[v] {
				t.Errorf("%s sets %s, which is no setting", f, v)
			}
		}
	}
}

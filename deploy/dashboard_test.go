package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// telemetryNames reads the metric names the binary registers from
// internal/node/telemetry.go, the one place they are defined, so the dashboard and the
// alerts cannot drift from them unnoticed.
func telemetryNames(t *testing.T) (names map[string]bool, histograms map[string]bool) {
	t.Helper()
	src, err := os.ReadFile("../internal/node/telemetry.go")
	if err != nil {
		t.Fatal(err)
	}
	names, histograms = map[string]bool{}, map[string]bool{}
	re := regexp.MustCompile(`\bNew(\w+)\(prometheus\.\w+Opts\{Name:\s*"(notifybridge_\w+)"`)
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		names[m[2]] = true
		if m[1] == "Histogram" || m[1] == "HistogramVec" {
			histograms[m[2]] = true
		}
	}
	if len(names) < 20 || len(histograms) < 2 {
		t.Fatalf("read %d names, %d histograms from telemetry.go: has its style changed?", len(names), len(histograms))
	}
	return names, histograms
}

var metricRe = regexp.MustCompile(`\bnotifybridge_\w+`)

// checkExpr fails for any notifybridge_* name in expr the binary does not
// export (histograms count with their _bucket, _sum and _count series).
func checkExpr(t *testing.T, where, expr string, names, histograms map[string]bool, used map[string]bool) {
	t.Helper()
	for _, n := range metricRe.FindAllString(expr, -1) {
		base := n
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, suf); ok && histograms[b] {
				base = b
			}
		}
		if !names[base] {
			t.Errorf("%s: %s is not a metric in telemetry.go (expr %s)", where, n, expr)
		}
		used[base] = true
	}
}

func TestDashboardUsesExactlyTheExportedMetrics(t *testing.T) {
	names, histograms := telemetryNames(t)
	raw, err := os.ReadFile("grafana/notifybridge.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkExpr(t, "panel "+p.Title, tg.Expr, names, histograms, used)
		}
	}
	// Every exported metric has a panel: an operator never has to write
	// PromQL to see one.
	for n := range names {
		if !used[n] {
			t.Errorf("%s has no dashboard panel", n)
		}
	}
}

func TestAlertsUseExportedMetricsAndHaveARunbook(t *testing.T) {
	names, histograms := telemetryNames(t)
	raw, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	runbook, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	headings := regexp.MustCompile(`(?m)^#+ +(Notifybridge\w+)`).FindAllStringSubmatch(string(runbook), -1)
	var documented []string
	for _, h := range headings {
		documented = append(documented, h[1])
	}
	used := map[string]bool{}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			checkExpr(t, "alert "+r.Alert, r.Expr, names, histograms, used)
			if !slices.Contains(documented, r.Alert) {
				t.Errorf("alert %s has no section in docs/operations.md", r.Alert)
			}
			if !strings.Contains(r.Annotations["runbook_url"], strings.ToLower(r.Alert)) {
				t.Errorf("alert %s: runbook_url %q does not point at its section", r.Alert, r.Annotations["runbook_url"])
			}
		}
	}
	if n == 0 {
		t.Fatal("no alerts parsed")
	}
}

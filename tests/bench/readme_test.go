package main

import (
	"errors"
	"strings"
	"testing"
)

func TestRewriteReadme(t *testing.T) {
	rep := &report{Date: "D", Machine: "M", Containerd: "C", Runc: "R", Iterations: 20, Sections: "exec", DurationSec: 9}
	rep.latency("3. exec: /bin/true", "exec: total", "ms", []float64{50}, []float64{100})
	rep.value("3b. exec storm", "RSS settled minus idle", "MiB", 1.5, 1.2)
	doc := func(table ...string) string {
		return "# x\n\nbefore\n" + readmeBegin + "\n" + strings.Join(table, "\n") + "\n" + readmeEnd + "\nafter\n"
	}
	old := []string{
		"| stdout 256 MiB | 1640 MiB/s | 716 MiB/s | 2.29 | >= 1.50 met |",
		"| exec p50 | 65.9 ms | 70.5 ms | 0.93 | <= 0.95 with runc met |",
		"| kill->exit p50 | 2.82 ms | 23.3 ms | 0.12 | <= 1.00 met (earlier run) |",
		"| a row no longer listed | 1 | 2 | 0.50 | - |",
	}
	got, err := rep.rewriteReadme([]byte(doc(old...)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		line string
		want bool
	}{
		{"measured row from the run", "| exec p50 | 50 ms | 100 ms | 0.50 | <= 0.95 with runc met |", true},
		{"absolute target missed", "| exec storm: RSS settled after, minus idle | 1.50 MiB | 1.20 MiB | 1.25 | <= 1 MiB missed |", true},
		{"unmeasured row kept and marked", "| stdout 256 MiB | 1640 MiB/s | 716 MiB/s | 2.29 | >= 1.50 met (earlier run) |", true},
		{"marked once only", "| kill->exit p50 | 2.82 ms | 23.3 ms | 0.12 | <= 1.00 met (earlier run) |", true},
		{"unlisted row dropped", "a row no longer listed", false},
		{"old exec row replaced", "65.9 ms", false},
		{"text around kept", "before\n" + readmeBegin + "\nRun of D: M; C; runc R; -n 20; sections exec; 9 s.\n", true},
		{"says what is stale", "2 of the rows are from this run; 2, marked, are kept from an earlier one.", true},
		{"end kept", readmeEnd + "\nafter\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(string(got), tc.line) != tc.want {
				t.Errorf("README contains %q: got %v, want %v\n%s", tc.line, !tc.want, tc.want, got)
			}
		})
	}
	// Rows keep readmeRows' order: exec before the storm before kill.
	s := string(got)
	if a, b, c := strings.Index(s, "| exec p50"), strings.Index(s, "| exec storm"), strings.Index(s, "| kill->exit"); !(a < b && b < c) {
		t.Errorf("rows out of order: exec %d, storm %d, kill %d", a, b, c)
	}
	if _, err := rep.rewriteReadme([]byte("# no markers\n")); !errors.Is(err, errNoMarkers) {
		t.Errorf("no markers: got %v, want errNoMarkers", err)
	}
}

package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// knownDifferencesFile is the checked-in list of every known difference
// (KNOWN GAP, KNOWN UPSTREAM, ...): the one source of truth for which
// test may be excused from which check, with which runtime and daemon.
const knownDifferencesFile = "known-differences.toml"

// The marks a listed difference prints, and its kinds.
var (
	knownMarks = []string{"KNOWN GAP", "KNOWN UPSTREAM", "KNOWN UPSTREAM FAILURE", "KNOWN UPSTREAM LOSS"}
	knownKinds = []string{"deterministic", "intermittent"}
)

// knownEntry is one [[difference]] of the file.
type knownEntry struct {
	Key     string   `toml:"key"`     // what the test passes to knownDifference
	Mark    string   `toml:"mark"`    // one of knownMarks
	Tests   []string `toml:"tests"`   // Test or Test/subtest names (and those below them); "*" any
	Runtime string   `toml:"runtime"` // the SHIM_TEST_RUNTIME it applies to
	Daemons []string `toml:"daemons"` // daemonVersion names ("2.4.2", "2.2", "1.6"); "*" any
	// Kind is "deterministic": every run of a listed test that passes on
	// a listed daemon shows it, else the run fails (a gap that starts
	// passing is noticed); or "intermittent": never required.
	Kind   string `toml:"kind"`
	Reason string `toml:"reason"`
}

// knownRegistry is the loaded list and what the run emitted against it.
type knownRegistry struct {
	entries []knownEntry

	mu    sync.Mutex
	marks []markRecord // guarded by mu
	runs  []runRecord  // guarded by mu
}

// markRecord is one call of knownDifference.
type markRecord struct {
	key, test, daemon, msg string
	listed                 bool
}

// runRecord is one env of a test on a daemon, and how its test ended.
type runRecord struct {
	test, daemon string
	passed       bool
}

// known is the run's registry, loaded by TestMain before any test runs.
var known knownRegistry

// loadKnownDifferences reads and validates the list.
func loadKnownDifferences(path string) ([]knownEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f struct {
		Difference []knownEntry `toml:"difference"`
	}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, e := range f.Difference {
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("%s: difference %d (key %q): %w", path, i+1, e.Key, err)
		}
	}
	return f.Difference, nil
}

func (e knownEntry) validate() error {
	switch {
	case e.Key == "" || e.Reason == "":
		return fmt.Errorf("key and reason are required")
	case !slices.Contains(knownMarks, e.Mark):
		return fmt.Errorf("mark %q, want one of %q", e.Mark, knownMarks)
	case !slices.Contains(knownKinds, e.Kind):
		return fmt.Errorf("kind %q, want one of %q", e.Kind, knownKinds)
	case e.Runtime != sandboxRuntime && e.Runtime != runcRuntime:
		return fmt.Errorf("runtime %q, want %q or %q", e.Runtime, sandboxRuntime, runcRuntime)
	case len(e.Tests) == 0 || len(e.Daemons) == 0:
		return fmt.Errorf("tests and daemons are required")
	case e.Mark == "KNOWN GAP" && e.Runtime != sandboxRuntime:
		return fmt.Errorf("a KNOWN GAP is this shim's; the runc shim's differences are KNOWN UPSTREAM")
	case strings.HasPrefix(e.Mark, "KNOWN UPSTREAM") && e.Runtime != runcRuntime:
		return fmt.Errorf("a KNOWN UPSTREAM difference is the runc shim's: this shim is held to every check")
	}
	for _, d := range e.Daemons {
		if d != "*" && !slices.ContainsFunc(daemonVersions(), func(v daemonVersion) bool { return v.name == d }) {
			return fmt.Errorf("daemon %q is not one of the suite's", d)
		}
	}
	if e.Kind == "deterministic" && (slices.Contains(e.Tests, "*") || slices.Contains(e.Daemons, "*")) {
		return fmt.Errorf("a deterministic difference names its tests and daemons (no \"*\")")
	}
	return nil
}

// testMatches reports whether name (t.Name()) is pattern or below it.
func testMatches(pattern, name string) bool {
	return pattern == "*" || name == pattern || strings.HasPrefix(name, pattern+"/")
}

func (e knownEntry) applies(key, test, runtime, daemon string) bool {
	return e.Key == key && e.Runtime == runtime &&
		slices.ContainsFunc(e.Tests, func(p string) bool { return testMatches(p, test) }) &&
		(slices.Contains(e.Daemons, "*") || slices.Contains(e.Daemons, daemon))
}

// knownDifference reports whether the list excuses t, with the runtime
// under test on daemon (a daemonVersion name; "" where the caller cannot
// say, which only an entry for every daemon matches), from the check that
// key names. If so it logs the entry's mark with the message; if not it
// says so, and the caller fails the check. Either way the run remembers
// the call: TestMain fails a run in which an unlisted one was made, or in
// which a deterministic listed one was missing from a test that passed.
func knownDifference(t testing.TB, daemon, key, format string, args ...any) bool {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	var entry *knownEntry
	for i, e := range known.entries {
		if e.applies(key, t.Name(), runtimeUnderTest(), daemon) {
			entry = &known.entries[i]
			break
		}
	}
	known.mu.Lock()
	known.marks = append(known.marks, markRecord{key: key, test: t.Name(), daemon: daemon, msg: msg, listed: entry != nil})
	known.mu.Unlock()
	if entry == nil {
		t.Logf("NOT A LISTED DIFFERENCE [%s] (%s, %s, containerd %s; see tests/%s): %s",
			key, t.Name(), runtimeUnderTest(), daemonLabel(daemon), knownDifferencesFile, msg)
		return false
	}
	t.Logf("%s [%s]: %s", entry.Mark, key, msg)
	return true
}

// recordRun remembers that t used daemon; called from its cleanup, when
// how t ended is known.
func recordRun(t testing.TB, daemon string) {
	known.mu.Lock()
	defer known.mu.Unlock()
	known.runs = append(known.runs, runRecord{test: t.Name(), daemon: daemon, passed: !t.Failed() && !t.Skipped()})
}

func daemonLabel(d string) string {
	if d == "" {
		return "any"
	}
	return d
}

// check returns the run's problems with the list: unlisted marks, and
// deterministic entries for runtime that a passing test did not show.
func (r *knownRegistry) check(runtime string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var problems []string
	for _, m := range r.marks {
		if !m.listed {
			problems = append(problems, fmt.Sprintf("%s with %s on containerd %s: [%s] is not listed in tests/%s for it: %s",
				m.test, runtime, daemonLabel(m.daemon), m.key, knownDifferencesFile, m.msg))
		}
	}
	for _, e := range r.entries {
		if e.Kind != "deterministic" || e.Runtime != runtime {
			continue
		}
		for _, test := range e.Tests {
			for _, daemon := range e.Daemons {
				ran, passed := false, true
				for _, run := range r.runs {
					if run.daemon == daemon && testMatches(test, run.test) {
						ran = true
						passed = passed && run.passed
					}
				}
				if !ran || !passed {
					continue
				}
				seen := slices.ContainsFunc(r.marks, func(m markRecord) bool {
					return m.listed && m.key == e.Key && m.daemon == daemon && testMatches(test, m.test)
				})
				if !seen {
					problems = append(problems, fmt.Sprintf("%s passed with %s on containerd %s without its deterministic %s [%s] (tests/%s): if the difference is gone, remove it from the list",
						test, runtime, daemon, e.Mark, e.Key, knownDifferencesFile))
				}
			}
		}
	}
	return problems
}

// TestKnownDifferencesList: every key the list names is one a test passes
// to knownDifference, and every key a test passes is listed; and the
// end-of-run check fails on what it must fail on.
func TestKnownDifferencesList(t *testing.T) {
	used := map[string]bool{}
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`knownDifference\([^,]+,[^,]+, "([^"]+)"`)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(data), -1) {
			used[m[1]] = true
		}
	}
	listed := map[string]bool{}
	for _, e := range known.entries {
		listed[e.Key] = true
		if !used[e.Key] {
			t.Errorf("%s lists key %q, which no test passes to knownDifference", knownDifferencesFile, e.Key)
		}
	}
	for k := range used {
		if !listed[k] {
			t.Errorf("a test passes key %q to knownDifference; %s does not list it", k, knownDifferencesFile)
		}
	}

	entries := []knownEntry{
		{Key: "det", Mark: "KNOWN UPSTREAM", Tests: []string{"TestA/sub"}, Runtime: runcRuntime, Daemons: []string{"1.6"}, Kind: "deterministic", Reason: "r"},
		{Key: "int", Mark: "KNOWN UPSTREAM LOSS", Tests: []string{"TestB"}, Runtime: runcRuntime, Daemons: []string{"*"}, Kind: "intermittent", Reason: "r"},
	}
	for _, e := range entries {
		if err := e.validate(); err != nil {
			t.Fatalf("validate %+v: %v", e, err)
		}
	}
	tests := []struct {
		name    string
		runtime string
		marks   []markRecord
		runs    []runRecord
		want    int // problems
	}{
		{name: "deterministic shown", runtime: runcRuntime,
			marks: []markRecord{{key: "det", test: "TestA/sub", daemon: "1.6", listed: true}},
			runs:  []runRecord{{test: "TestA/sub", daemon: "1.6", passed: true}}},
		{name: "deterministic missing from a passing test", runtime: runcRuntime,
			runs: []runRecord{{test: "TestA/sub", daemon: "1.6", passed: true}}, want: 1},
		{name: "deterministic missing from a failed test", runtime: runcRuntime,
			runs: []runRecord{{test: "TestA/sub", daemon: "1.6", passed: false}}},
		{name: "deterministic, test not run on its daemon", runtime: runcRuntime,
			runs: []runRecord{{test: "TestA/sub", daemon: "2.4.2", passed: true}}},
		{name: "deterministic, another runtime", runtime: sandboxRuntime,
			runs: []runRecord{{test: "TestA/sub", daemon: "1.6", passed: true}}},
		{name: "intermittent never required", runtime: runcRuntime,
			runs: []runRecord{{test: "TestB", daemon: "2.4.2", passed: true}}},
		{name: "unlisted mark", runtime: runcRuntime,
			marks: []markRecord{{key: "int", test: "TestC", daemon: "2.4.2", listed: false}}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &knownRegistry{entries: entries, marks: tt.marks, runs: tt.runs}
			if got := r.check(tt.runtime); len(got) != tt.want {
				t.Errorf("check = %q, want %d problems", got, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		key, test, runtime, daemon string
		want                       bool
	}{
		{"det", "TestA/sub", runcRuntime, "1.6", true},
		{"det", "TestA/sub/deeper", runcRuntime, "1.6", true},
		{"det", "TestA", runcRuntime, "1.6", false},
		{"det", "TestA/subway", runcRuntime, "1.6", false},
		{"det", "TestA/sub", sandboxRuntime, "1.6", false},
		{"det", "TestA/sub", runcRuntime, "2.4.2", false},
		{"int", "TestB/x", runcRuntime, "2.2", true},
		{"int", "TestB", runcRuntime, "", true},
		{"other", "TestB", runcRuntime, "2.2", false},
	} {
		found := slices.ContainsFunc(entries, func(e knownEntry) bool { return e.applies(tt.key, tt.test, tt.runtime, tt.daemon) })
		if found != tt.want {
			t.Errorf("an entry applies to key %q, test %q, %s, daemon %q = %v, want %v", tt.key, tt.test, tt.runtime, tt.daemon, found, tt.want)
		}
	}
	for _, bad := range []knownEntry{
		{Key: "k", Mark: "KNOWN UPSTREAM", Tests: []string{"T"}, Runtime: sandboxRuntime, Daemons: []string{"1.6"}, Kind: "intermittent", Reason: "r"},
		{Key: "k", Mark: "KNOWN GAP", Tests: []string{"T"}, Runtime: runcRuntime, Daemons: []string{"1.6"}, Kind: "intermittent", Reason: "r"},
		{Key: "k", Mark: "KNOWN UPSTREAM", Tests: []string{"*"}, Runtime: runcRuntime, Daemons: []string{"1.6"}, Kind: "deterministic", Reason: "r"},
		{Key: "k", Mark: "KNOWN UPSTREAM", Tests: []string{"T"}, Runtime: runcRuntime, Daemons: []string{"1.7"}, Kind: "intermittent", Reason: "r"},
		{Key: "k", Mark: "KNOWN UPSTREAM", Tests: []string{"T"}, Runtime: runcRuntime, Daemons: []string{"1.6"}, Kind: "sometimes", Reason: "r"},
		{Key: "k", Mark: "KNOWN UPSTREAM", Tests: []string{"T"}, Runtime: runcRuntime, Daemons: []string{"1.6"}, Kind: "intermittent"},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("validate %+v = nil, want an error", bad)
		}
	}
}

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// knownDifferences are upstream tests that fail for the runc shim too on
// these machines, by runtime and test, with the reason. Such a failure is
// reported, not counted; a listed test that passes fails the run, so the
// list cannot go stale silently. Empty: the runc shim passes all six.
var knownDifferences = map[string]map[string]string{}

// event is one line of test2json's output.
type event struct {
	Action  string
	Test    string
	Elapsed float64
	Output  string
}

// result is what one top-level test did.
type result struct {
	action  string // "pass", "fail", "skip"; "" when it reported nothing
	elapsed float64
	output  []string // its own and its subtests' output, in order
}

// collect reads test2json events from r, writes the plain test output to
// raw, announces each top-level test's end on progress, and returns the
// results by test name and the output that belongs to no test (TestMain,
// the binary's last words).
func collect(r io.Reader, raw, progress io.Writer) (map[string]*result, []string, error) {
	results := map[string]*result{}
	var other []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			// test2json writes only events; keep anything else as output.
			fmt.Fprintln(raw, sc.Text())
			other = append(other, sc.Text())
			continue
		}
		if ev.Action == "output" {
			_, _ = io.WriteString(raw, ev.Output)
		}
		top, _, _ := strings.Cut(ev.Test, "/")
		if top == "" {
			if ev.Action == "output" {
				other = append(other, strings.TrimSuffix(ev.Output, "\n"))
			}
			continue
		}
		res := results[top]
		if res == nil {
			res = &result{}
			results[top] = res
		}
		switch ev.Action {
		case "output":
			res.output = append(res.output, strings.TrimSuffix(ev.Output, "\n"))
		case "pass", "fail", "skip":
			if ev.Test == top {
				res.action, res.elapsed = ev.Action, ev.Elapsed
				fmt.Fprintf(progress, "    %-40s %s (%.1fs)\n", top, strings.ToUpper(ev.Action), ev.Elapsed)
			}
		}
	}
	return results, other, sc.Err()
}

// logLine matches the client's debug log lines that logtest routes into a
// test's output; they are context, not the failure.
var logLine = regexp.MustCompile(`^\s*\S+\.go:\d+: time="`)

// failureLines picks the lines that say why a test failed: testify's
// blocks, t.Error and t.Fatal lines (a test's own t.Log lines look the
// same and may come along), and test2json's timeout and panic lines.
func failureLines(out []string) []string {
	var lines []string
	inTestify := false
	for _, l := range out {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "Error Trace:"):
			inTestify = true
		case strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "=== "):
			inTestify = false
			continue
		case logLine.MatchString(l):
			inTestify = false
			continue
		}
		if inTestify || strings.Contains(t, "_test.go:") || strings.HasPrefix(t, "panic:") ||
			strings.HasPrefix(t, "test timed out") {
			lines = append(lines, l)
		}
	}
	return lines
}

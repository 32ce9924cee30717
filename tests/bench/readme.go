package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// The README's benchmark table is written from the run (-readme), between
// these two lines of the file.
const (
	readmeBegin = "<!-- bench:table begin (written by tests/bench -readme; edit readmeRows) -->"
	readmeEnd   = "<!-- bench:table end -->"
)

// readmeRow is one line of the README table: the report row it shows
// (its section's number and its figure) and the target it is held to.
type readmeRow struct {
	label   string // the first cell; also how a kept line is found
	section string // the report row's section begins with this
	figure  string
	// target says what is wanted, e.g. "<= 0.70"; met decides it from the
	// row. Rows without a target show "-".
	target string
	met    func(r row) bool
}

// ratioAtMost and ratioAtLeast hold a row's ratio to a target.
func ratioAtMost(v float64) func(row) bool {
	return func(r row) bool { return r.Ratio != 0 && r.Ratio <= v }
}

func ratioAtLeast(v float64) func(row) bool {
	return func(r row) bool { return r.Ratio >= v }
}

// thisAtMost holds this shim's own figure to a bound.
func thisAtMost(v float64) func(row) bool {
	return func(r row) bool { return r.This != nil && r.This.P50 <= v }
}

// readmeRows are the README table's lines, in order, with issue 15's
// targets.
var readmeRows = []readmeRow{
	{"lifecycle p50, standalone", "1.", "standalone: total", "<= 0.70", ratioAtMost(0.70)},
	{"lifecycle p50, 2nd..Kth container of a pod", "1.", "in pod, 2nd..Kth container: total", "<= 0.50", ratioAtMost(0.50)},
	{"exec p50", "3.", "exec: total", "<= 0.95 with runc", ratioAtMost(0.95)},
	{"exec p50, libcontainer engine", "3c.", "exec: total", "<= 0.80", ratioAtMost(0.80)},
	{"exec CPU per exec, shim + what it reaped (runc engine)", "3.", "CPU per exec: shim + what it reaped", "", nil},
	{"exec CPU per exec, shim + what it reaped (libcontainer engine)", "3c.", "CPU per exec: shim + what it reaped", "", nil},
	{"exec storm: CPU per exec, shim + runc + the exec", "3b.", "CPU per exec: shim + reaped children (runc, the exec)", "", nil},
	{"exec storm: RSS idle before", "3b.", "RSS idle, before", "", nil},
	{"exec storm: RSS settled after, minus idle", "3b.", "RSS settled minus idle", "<= 1 MiB", thisAtMost(1)},
	{"kill->exit p50", "4.", "Kill to exit on Wait", "<= 1.00", ratioAtMost(1)},
	{"stdout 256 MiB", "5.", "throughput", ">= 1.50", ratioAtLeast(1.5)},
	{"node of 10 pods: USS per pod", "8.", "USS per pod", "<= 0.40", ratioAtMost(0.40)},
	{"node of 10 pods: PSS per pod", "8.", "PSS per pod", "<= 0.40", ratioAtMost(0.40)},
	{"one pod, K=1: PSS", "7.", "K=1: PSS", "<= 0.65", ratioAtMost(0.65)},
	{"one pod, K=1: RSS", "7.", "K=1: RSS", "<= 0.40", ratioAtMost(0.40)},
	{"one pod, K=30: PSS", "7.", "K=30: PSS", "<= 0.65", ratioAtMost(0.65)},
	{"marginal PSS per container, K=1..30", "7.", "marginal PSS per container, K=1..30", "<= 0.50", ratioAtMost(0.50)},
	{"marginal PSS per container, K=30..100", "7.", "marginal PSS per container, K=30..100", "<= 0.50", ratioAtMost(0.50)},
	{"start-all K=30", "9.", "start all K=30", "<= 0.80", ratioAtMost(0.80)},
	{"stop-all K=30", "9.", "stop all K=30 (SIGKILL+Delete, concurrent)", "", nil},
	{"binary run: start, pod's shim running, over a minimal Go binary", "9b.", "start over the minimal binary", "<= 2 ms", thisAtMost(2)},
	{"binary run: delete, nothing left, over a minimal Go binary", "9b.", "delete over the minimal binary", "<= 2 ms", thisAtMost(2)},
	{"idle CPU over 10 s, K=30", "7.", "K=30: CPU over 10s idle", "0 ms", thisAtMost(0)},
}

// find returns the report's row for x.
func (r *report) find(x readmeRow) (row, bool) {
	for _, y := range r.Rows {
		if strings.HasPrefix(y.Section, x.section+" ") && y.Figure == x.figure {
			return y, true
		}
	}
	return row{}, false
}

// readmeLine renders x from the run.
func readmeLine(x readmeRow, y row) string {
	cell := func(s *series) string {
		if s == nil {
			return "-"
		}
		return strings.TrimSpace(num(s.P50) + " " + y.Unit)
	}
	target := "-"
	if x.target != "" {
		verdict := "missed"
		if x.met(y) {
			verdict = "met"
		}
		target = x.target + " " + verdict
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s |", x.label, cell(y.This), cell(y.Runc), ratioCell(y.Ratio), target)
}

// readmeTable renders the table: a line saying which run it is from, and
// every row of readmeRows, from this run where it measured the row, else
// kept from old (the lines between the markers before), else left out.
func (r *report) readmeTable(old []string) []string {
	kept := map[string]string{}
	for _, l := range old {
		if label, ok := strings.CutPrefix(l, "| "); ok {
			label, _, _ = strings.Cut(label, " |")
			kept[label] = l
		}
	}
	var lines []string
	fresh, stale := 0, 0
	for _, x := range readmeRows {
		if y, ok := r.find(x); ok {
			lines = append(lines, readmeLine(x, y))
			fresh++
		} else if l, ok := kept[x.label]; ok {
			if body := strings.TrimSuffix(l, " |"); !strings.HasSuffix(body, staleMark) {
				l = body + staleMark + " |"
			}
			lines = append(lines, l)
			stale++
		}
	}
	head := []string{
		fmt.Sprintf("Run of %s: %s; %s; runc %s; -n %d; sections %s; %.0f s.",
			r.Date, r.Machine, r.Containerd, r.Runc, r.Iterations, r.Sections, r.DurationSec),
	}
	if stale > 0 {
		head = append(head, fmt.Sprintf("%d of the rows are from this run; %d, marked, are kept from an earlier one.", fresh, stale))
	}
	head = append(head, "", "| figure | sandbox-v2 | runc-v2 | ratio | target |", "|---|---|---|---|---|")
	return append(head, lines...)
}

// staleMark ends the last cell of a line kept from an earlier run.
const staleMark = " (earlier run)"

var errNoMarkers = errors.New("no bench table markers")

// writeReadme rewrites the table between readmeBegin and readmeEnd in
// the file at path.
func (r *report) writeReadme(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := r.rewriteReadme(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, out, 0o644)
}

func (r *report) rewriteReadme(data []byte) ([]byte, error) {
	text := string(data)
	i := strings.Index(text, readmeBegin+"\n")
	j := strings.Index(text, "\n"+readmeEnd)
	if i < 0 || j < i {
		return nil, fmt.Errorf("%w (%q ... %q)", errNoMarkers, readmeBegin, readmeEnd)
	}
	body := text[i+len(readmeBegin)+1 : j+1]
	old := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	var b bytes.Buffer
	b.WriteString(text[:i+len(readmeBegin)+1])
	for _, l := range r.readmeTable(old) {
		b.WriteString(l + "\n")
	}
	b.WriteString(text[j+1:])
	return b.Bytes(), nil
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"unicode/utf8"
)

// series is one runtime's samples of a figure.
type series struct {
	P50     float64   `json:"p50"`
	P90     float64   `json:"p90"`
	P95     float64   `json:"p95"`
	N       int       `json:"n"`
	Samples []float64 `json:"samples,omitempty"`
}

func newSeries(samples []float64) *series {
	if len(samples) == 0 {
		return nil
	}
	return &series{
		P50: percentile(samples, 50), P90: percentile(samples, 90), P95: percentile(samples, 95),
		N: len(samples), Samples: samples,
	}
}

// p90 and p95 pick a tail column for cells.
func p90(s *series) float64 { return s.P90 }
func p95(s *series) float64 { return s.P95 }

// percentile is the nearest-rank percentile p of samples.
func percentile(samples []float64, p float64) float64 {
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}

// row is one line of the result table. Latency rows show p50 and p95;
// value rows one figure per runtime (the median of their samples).
type row struct {
	Section string  `json:"section"`
	Figure  string  `json:"figure"`
	Unit    string  `json:"unit"`
	Value   bool    `json:"value,omitempty"`
	This    *series `json:"this"`              // containerd-shim-sandbox-v2
	Runc    *series `json:"runc_v2,omitempty"` // containerd-shim-runc-v2
	// Ratio is this/runc-v2 of the p50s (of the values), 0 when undefined.
	Ratio float64 `json:"ratio,omitempty"`
}

// report is the whole run: the header and every row, in order.
type report struct {
	Date        string  `json:"date"`
	Machine     string  `json:"machine"`
	Containerd  string  `json:"containerd"`
	Runc        string  `json:"runc"`
	Binaries    string  `json:"binaries"`
	Iterations  int     `json:"n"`
	Sections    string  `json:"sections"`
	DurationSec float64 `json:"duration_seconds"`
	Rows        []row   `json:"rows"`
	// CRI is section 10's table (three modes, not two), if it ran.
	CRI *criReport `json:"cri,omitempty"`
}

// empty reports whether no figure was measured.
func (r *report) empty() bool { return len(r.Rows) == 0 && r.CRI == nil }

// latency adds a p50/p95 row.
func (r *report) latency(section, figure, unit string, this, runc []float64) {
	r.add(row{Section: section, Figure: figure, Unit: unit, This: newSeries(this), Runc: newSeries(runc)})
}

// value adds a row of one figure per runtime.
func (r *report) value(section, figure, unit string, this, runc float64) {
	r.add(row{Section: section, Figure: figure, Unit: unit, Value: true,
		This: newSeries([]float64{this}), Runc: newSeries([]float64{runc})})
}

// values adds a row of the median of each runtime's samples.
func (r *report) values(section, figure, unit string, this, runc []float64) {
	r.add(row{Section: section, Figure: figure, Unit: unit, Value: true, This: newSeries(this), Runc: newSeries(runc)})
}

func (r *report) add(x row) {
	if x.This != nil && x.Runc != nil && x.Runc.P50 != 0 {
		x.Ratio = x.This.P50 / x.Runc.P50
	}
	r.Rows = append(r.Rows, x)
}

// printTable writes the header and the rows, grouped by section, then
// the CRI table.
func (r *report) printTable(w io.Writer) {
	fmt.Fprintf(w, "containerd-shim-sandbox-v2 vs containerd-shim-runc-v2, alternating A B A B in one run\n")
	fmt.Fprintf(w, "date:       %s\n", r.Date)
	fmt.Fprintf(w, "machine:    %s\n", r.Machine)
	fmt.Fprintf(w, "containerd: %s\n", r.Containerd)
	fmt.Fprintf(w, "runc:       %s\n", r.Runc)
	fmt.Fprintf(w, "binaries:   %s\n", r.Binaries)
	fmt.Fprintf(w, "n:          %d per runtime per figure (after warm-up), sections: %s, took %.0fs\n\n", r.Iterations, r.Sections, r.DurationSec)

	if len(r.Rows) > 0 {
		table := [][]string{{"figure", "unit", runtimes[0].label + " p50", "p95", runtimes[1].label + " p50", "p95", "ratio"}}
		section := ""
		for _, x := range r.Rows {
			if x.Section != section {
				section = x.Section
				table = append(table, []string{section})
			}
			line := []string{"  " + x.Figure, x.Unit}
			line = append(line, cells(x.This, x.Value, p95)...)
			line = append(line, cells(x.Runc, x.Value, p95)...)
			table = append(table, append(line, ratioCell(x.Ratio)))
		}
		writeColumns(w, table)
	}
	if r.CRI != nil {
		if len(r.Rows) > 0 {
			fmt.Fprintln(w)
		}
		r.CRI.print(w)
	}
}

// ratioCell renders a ratio, "-" when undefined (0).
func ratioCell(ratio float64) string {
	if ratio == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", ratio)
}

// writeColumns prints rows as columns: the first two left-aligned, the
// numbers right-aligned. A row of one cell (a section title) spans them.
func writeColumns(w io.Writer, rows [][]string) {
	var width []int
	for _, cols := range rows {
		if len(cols) == 1 {
			continue
		}
		for i, c := range cols {
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, cols := range rows {
		var b strings.Builder
		for i, c := range cols {
			pad := strings.Repeat(" ", max(width[i]-utf8.RuneCountInString(c), 0))
			switch {
			case len(cols) == 1:
				b.WriteString(c)
			case i < 2:
				b.WriteString(c + pad + "  ")
			default:
				b.WriteString(pad + c + "  ")
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// cells renders a series as its p50 and tail (p90 or p95) columns.
func cells(s *series, value bool, tail func(*series) float64) []string {
	switch {
	case s == nil:
		return []string{"-", "-"}
	case value:
		return []string{num(s.P50), ""}
	default:
		return []string{num(s.P50), num(tail(s))}
	}
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// writeJSON writes the report to path.
func (r *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

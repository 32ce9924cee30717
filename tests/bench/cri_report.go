package main

import (
	"fmt"
	"io"
)

// criReport is the CRI section's table: three modes side by side, and
// the first two's ratios to the third, the reference.
type criReport struct {
	Title string `json:"title"`
	// Modes and Handlers describe the columns, in order.
	Modes    []string `json:"modes"`
	Handlers []string `json:"handlers"`
	Pods     int      `json:"pods"` // of the memory figures
	Rows     []criRow `json:"rows"`
}

// criRow is one line of the CRI table. Latency rows show p50 and p90;
// value rows one figure per mode.
type criRow struct {
	Figure string    `json:"figure"`
	Unit   string    `json:"unit"`
	Value  bool      `json:"value,omitempty"`
	Modes  []*series `json:"modes"` // in criReport.Modes order
	// Ratios are the p50s (values) of the first two modes over the
	// third's, 0 when undefined.
	Ratios []float64 `json:"ratios_vs_runc_v2"`
}

// latency adds a p50/p90 row of samples by mode.
func (r *criReport) latency(figure, unit string, samples [][]float64) {
	r.add(criRow{Figure: figure, Unit: unit}, samples)
}

// value adds a row of one figure per mode.
func (r *criReport) value(figure, unit string, values []float64) {
	samples := make([][]float64, len(values))
	for i, v := range values {
		samples[i] = []float64{v}
	}
	r.add(criRow{Figure: figure, Unit: unit, Value: true}, samples)
}

func (r *criReport) add(x criRow, samples [][]float64) {
	for _, s := range samples {
		x.Modes = append(x.Modes, newSeries(s))
	}
	ref := x.Modes[len(x.Modes)-1]
	for _, s := range x.Modes[:len(x.Modes)-1] {
		ratio := 0.0
		if s != nil && ref != nil && ref.P50 != 0 {
			ratio = s.P50 / ref.P50
		}
		x.Ratios = append(x.Ratios, ratio)
	}
	r.Rows = append(r.Rows, x)
}

// print writes the CRI table: its title, what each column is, then the
// rows.
func (r *criReport) print(w io.Writer) {
	fmt.Fprintf(w, "%s\n", r.Title)
	for i, m := range r.Modes {
		fmt.Fprintf(w, "  %d = %s: handler %s\n", i+1, m, r.Handlers[i])
	}
	head := []string{"figure", "unit"}
	for _, m := range r.Modes {
		head = append(head, m+" p50", "p90")
	}
	last := len(r.Modes)
	for i := 1; i < last; i++ {
		head = append(head, fmt.Sprintf("ratio %d/%d", i, last))
	}
	table := [][]string{head}
	for _, x := range r.Rows {
		line := []string{"  " + x.Figure, x.Unit}
		for _, s := range x.Modes {
			line = append(line, cells(s, x.Value, p90)...)
		}
		for _, ratio := range x.Ratios {
			line = append(line, ratioCell(ratio))
		}
		table = append(table, line)
	}
	writeColumns(w, table)
}

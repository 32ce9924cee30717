package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestCRIReportRatios(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples [][]float64
		want    []float64
	}{
		{"both below the reference", [][]float64{{1, 2, 3}, {3}, {4}}, []float64{0.5, 0.75}},
		{"no reference samples", [][]float64{{1}, {2}, nil}, []float64{0, 0}},
		{"zero reference", [][]float64{{1}, {2}, {0}}, []float64{0, 0}},
		{"a mode without samples", [][]float64{nil, {2}, {4}}, []float64{0, 0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r criReport
			r.latency("f", "ms", tc.samples)
			if got := r.Rows[0].Ratios; !slices.Equal(got, tc.want) {
				t.Errorf("ratios = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCRIReportPrint(t *testing.T) {
	r := criReport{
		Title:    "10. cri",
		Modes:    []string{"a", "b", "c"},
		Handlers: []string{"ha", "hb", "hc"},
	}
	samples := make([]float64, 10)
	for i := range samples {
		samples[i] = float64(i + 1)
	}
	r.latency("start", "ms", [][]float64{samples, samples, samples})
	r.value("PSS", "MiB", []float64{1, 2, 4})
	var out bytes.Buffer
	r.print(&out)
	for _, want := range []string{
		"10. cri\n",
		"  1 = a: handler ha\n",
		"  3 = c: handler hc\n",
		"a p50  p90  b p50  p90  c p50  p90  ratio 1/3  ratio 2/3",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for _, tc := range []struct{ prefix, fields string }{
		// p50 and p90 (nearest rank) of 1..10 per mode, both ratios 1.
		{"  start", "start ms 5 9 5 9 5 9 1.00 1.00"},
		// One value per mode, no p90.
		{"  PSS", "PSS MiB 1 2 4 0.25 0.50"},
	} {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, tc.prefix) })
		if i < 0 {
			t.Errorf("no row %q:\n%s", tc.prefix, out.String())
			continue
		}
		if got := strings.Join(strings.Fields(lines[i]), " "); got != tc.fields {
			t.Errorf("row %q = %q, want %q", tc.prefix, got, tc.fields)
		}
	}
}

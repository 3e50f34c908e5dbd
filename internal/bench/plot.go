package main

import (
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plot draws latency percentiles (p50, p90, p99) against offered load.
func (r *report) plot(path string) error {
	p := plot.New()
	p.Title.Text = "Conversa latency vs load"
	p.X.Label.Text = "throughput (messages/s)"
	p.Y.Label.Text = "latency (ms)"
	var args []any
	for _, q := range []int{50, 90, 99} {
		pts := make(plotter.XYs, 0, len(r.series))
		for _, s := range r.series {
			if d, ok := s.p[q]; ok {
				pts = append(pts, plotter.XY{X: s.rate, Y: float64(d.Microseconds()) / 1000})
			}
		}
		args = append(args, map[int]string{50: "p50", 90: "p90", 99: "p99"}[q], pts)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

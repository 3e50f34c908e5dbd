package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// loadPoint is one (load, latency percentiles) point for the plot.
type loadPoint struct {
	label string
	rate  float64
	p     map[int]time.Duration
}

// report collects the figures and writes them as markdown (and a plot).
type report struct {
	started  time.Time
	sections []section
	series   []loadPoint
	// files are written next to the report, by name (the full statement
	// table of figure 7, say).
	files map[string][]byte
}

type section struct {
	title string
	rows  [][2]string
}

func (r *report) add(title string, rows [][2]string) {
	r.sections = append(r.sections, section{title, rows})
	fmt.Printf("\n## %s\n", title)
	for _, row := range rows {
		fmt.Printf("  %-55s %s\n", row[0], row[1])
	}
}

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Conversa benchmark — %s\n\n", r.started.UTC().Format(time.RFC3339))
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Machine: %s, %d CPUs, %s; Postgres on 127.0.0.1 with synchronous commit on.\n\n", host, runtime.NumCPU(), runtime.Version())
	for _, s := range r.sections {
		fmt.Fprintf(&b, "## %s\n\n| figure | value |\n| --- | --- |\n", s.title)
		for _, row := range s.rows {
			fmt.Fprintf(&b, "| %s | %s |\n", row[0], row[1])
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	md := r.markdown()
	path := filepath.Join(dir, "report.md")
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
		return err
	}
	for name, b := range r.files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	if len(r.series) > 0 {
		if err := r.plot(filepath.Join(dir, "latency.png")); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
	}
	fmt.Printf("\nreport written to %s\n", path)
	return nil
}

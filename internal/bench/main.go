// Command bench measures Conversa on this machine and writes a report under
// bench/results: the one-commit ceiling (pgbench) against webhook ingest in
// the same run, end-to-end latency, sustained pipeline throughput, memory,
// and the cost curve as stored messages grow. Run it with `make bench`, alone
// on the machine: it reports numbers and never fails on a slow machine.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

func main() {
	gin.SetMode(gin.ReleaseMode)
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	admin := fs.String("db", envOr("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/postgres?sslmode=disable"), "admin connection to the Postgres server to benchmark on")
	out := fs.String("out", "bench/results", "where the report goes")
	dur := fs.Duration("duration", 15*time.Second, "length of each throughput run")
	conc := fs.Int("concurrency", 32, "concurrent senders for the ingest figure")
	only := fs.String("only", "", "comma-separated figures to run, by name or number (ingest=1, e2e=2, sustained=3, memory=4, curve=5, llm=6, cpu=7, events=8); empty = all")
	soak := fs.Duration("soak", 10*time.Minute, "length of the memory soak")
	soakRate := fs.Float64("soak-rate", 50, "messages per second during the memory soak (below what the pipeline sustains, so a growing queue is not mistaken for a leak)")
	llmRate := fs.Float64("llm-rate", 100, "messages per second in the LLM-bound figure (10 s of them)")
	trackPlanning := fs.Bool("track-planning", false, "figure 7 counts plannings per statement (pg_stat_statements.track_planning): shows statements planned on every call, but slows Postgres down, so its CPU figures are not comparable")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the bench process (load generator and in-process servers) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	want := func(name string) bool {
		num := strconv.Itoa(slices.Index(figureNames, name) + 1)
		return *only == "" || strings.Contains(","+*only+",", ","+name+",") || strings.Contains(","+*only+",", ","+num+",")
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	r := &report{started: time.Now()}
	b, err := newBench(ctx, *admin)
	if err != nil {
		return err
	}
	defer b.close()
	b.soak, b.soakRate, b.llmRate, b.trackPlanning = *soak, *soakRate, *llmRate, *trackPlanning

	first := true
	if want("ingest") {
		first = false
		if err := b.ingestFigure(ctx, r, *dur, *conc); err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
	}
	for _, f := range []struct {
		name string
		fn   func(context.Context, *report) error
	}{
		{"e2e", b.e2eFigure},
		{"sustained", b.sustainedFigure},
		{"memory", b.memoryFigure},
		{"curve", b.curveFigure},
		{"llm", b.llmFigure},
		// On a Postgres cluster of its own (it needs no fresh database here).
		{"cpu", b.cpuFigure},
		{"events", b.eventsFigure},
	} {
		if want(f.name) {
			if !first && f.name != "cpu" {
				if err := b.fresh(ctx); err != nil {
					return fmt.Errorf("fresh database for %s: %w", f.name, err)
				}
			}
			first = false
			// A figure that fails is reported as such; the others still run.
			if err := f.fn(ctx, r); err != nil {
				r.add("figure "+f.name+" failed", [][2]string{{"error", err.Error()}})
			}
		}
	}
	return r.write(*out)
}

// figureNames are the figures in report order: -only takes a name or its
// number.
var figureNames = []string{"ingest", "e2e", "sustained", "memory", "curve", "llm", "cpu", "events"}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/conversa/conversa/internal/pgcluster"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// this runs on (x86-64 and arm64 fix it at 100).
const clockTicks = 100

// cpuFigure: the sustained run of figure 3 on a private Postgres cluster the
// bench starts (so pg_stat_statements can be preloaded, and every Postgres
// process counted is ours), after a warm-up run of the same size and an
// ANALYZE, with the CPU each process spent per replied
// message from /proc, and what the database did per replied message: top
// statements by total time, commits, WAL, row writes, unused indexes.
func (b *bench) cpuFigure(ctx context.Context, r *report) error {
	dir, err := os.MkdirTemp("", "conversa-bench-pg-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Println("cpu: starting a private Postgres cluster with pg_stat_statements ...")
	pg, err := pgcluster.Start(ctx, dir, pgcluster.Options{Bin: os.Getenv("BENCH_PG_BIN"), Settings: []string{
		"shared_preload_libraries=pg_stat_statements",
		"pg_stat_statements.track=all",
		fmt.Sprintf("pg_stat_statements.track_planning=%t", b.trackPlanning),
		"pg_stat_statements.max=1000",
		"track_functions=pl",
		// The rest as the machine's own cluster (Debian's defaults), so the
		// figure is figure 3's run: synchronous commit and fsync on.
		"shared_buffers=128MB",
	}})
	if err != nil {
		return err
	}
	defer pg.Stop()
	pb, err := newBench(ctx, pg.AdminURL())
	if err != nil {
		return err
	}
	defer pb.close()
	if _, err := pb.pool.Exec(ctx, `CREATE EXTENSION pg_stat_statements`); err != nil {
		return err
	}
	// Steady state, as in a deployment that has run for a while: a
	// history of conversations, and statistics on every table (autovacuum
	// keeps them). On tables never analyzed the planner guesses, and for the
	// memory read it guessed the tenant's index: a scan of the tenant's
	// whole history, 0.8 ms a turn here and growing with the history.
	fmt.Println("cpu: warm-up run (a history of conversations), then ANALYZE ...")
	warm, err := pb.startPipeline(ctx)
	if err != nil {
		return err
	}
	warmRun, err := pb.sustained(ctx, warm)
	if err != nil {
		warm.stop()
		return fmt.Errorf("warm-up: %w", err)
	}
	// Its status callbacks too, before its server stops.
	if _, err := pb.waitDelivered(ctx, 0, warmRun.got); err != nil {
		warm.stop()
		return err
	}
	warm.stop()
	if _, err := pb.pool.Exec(ctx, `ANALYZE`); err != nil {
		return err
	}
	p, err := pb.startPipeline(ctx)
	if err != nil {
		return err
	}
	defer p.stop()
	postmaster, err := pg.PostmasterPID()
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, pb.url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_stat_statements_reset(), pg_stat_reset(), pg_stat_reset_shared('wal')`); err != nil {
		return err
	}
	warmDelivered, err := pb.waitDelivered(ctx, 0, 0)
	if err != nil {
		return err
	}
	before := takeCPU(p.cmd.Process.Pid, postmaster)

	run, err := pb.sustained(ctx, p)
	if err != nil {
		return err
	}
	// The replies' status callbacks (sent, delivered) are part of each
	// message's cost: wait for them to be applied.
	delivered, err := pb.waitDelivered(ctx, warmDelivered, run.got)
	if err != nil {
		return err
	}
	after := takeCPU(p.cmd.Process.Pid, postmaster)
	// Backends report table, index and commit counters when a transaction
	// ends, at most once a second; what is still pending then, an idle
	// backend reports 10 s later (Postgres 15's PGSTAT_IDLE_INTERVAL). With
	// 2 s here a fast run lost an eighth of its row counts.
	time.Sleep(11 * time.Second)

	replies := float64(run.got)
	if replies == 0 {
		return fmt.Errorf("no replies")
	}
	per := func(ticks int64) string {
		return fmt.Sprintf("%.2f ms", float64(ticks)*1000/clockTicks/replies)
	}
	d := after.minus(before)
	rows := run.rows()
	rows = append(rows,
		[2]string{"status callbacks applied (replies delivered)", fmt.Sprintf("%d of %d", delivered, run.got)},
		[2]string{"CPU per replied message: Postgres (every process of the private cluster; goal ≤ 2 ms)", per(d.postgres)},
		[2]string{"Postgres's CPU by process: client backends / background (WAL writer, checkpointer, ...) / exited (autovacuum workers, closed connections)",
			per(d.pgBackends) + " / " + per(d.pgBackground) + " / " + per(d.pgExited)},
		[2]string{"Postgres's CPU in the kernel (system time: socket I/O per round trip, WAL writes)", per(d.pgSystem)},
		[2]string{"CPU per replied message: conversa run (goal ≤ 1.5 ms)", per(d.conversa)},
		[2]string{"CPU per replied message: the rest (load generator and fake Twilio in the bench process)", per(d.bench)},
		[2]string{"CPU per replied message: Redis (the machine's, shared with anything else using it)", per(d.redis)},
		[2]string{"CPU per replied message: whole machine (all processes, other work included)", per(d.machine)},
		[2]string{"window measured", fmt.Sprintf("%.2f s wall, %.2f s CPU on the machine (%d CPUs)", after.at.Sub(before.at).Seconds(), float64(d.machine)/clockTicks, runtime.NumCPU())},
		[2]string{"CPU time stolen by the hypervisor in the window (other guests' load: when high, every figure above is slower)", fmt.Sprintf("%.2f s", float64(d.steal)/clockTicks)},
	)
	dbRows, err := dbFigures(ctx, conn, replies)
	if err != nil {
		return err
	}
	all, err := statementTable(ctx, conn, replies)
	if err != nil {
		return err
	}
	if r.files == nil {
		r.files = map[string][]byte{}
	}
	r.files["statements.tsv"] = all
	dbRows = append(dbRows, [2]string{"every statement of the run, by calls", "statements.tsv next to this report"})
	r.add("7. CPU per replied message (figure 3's sustained run on a private Postgres cluster; /proc counters, pg_stat_statements)", append(rows, dbRows...))
	return nil
}

// waitDelivered waits up to 15 s until more than since replies are
// delivered, n more, and returns how many more there are (want 0: at once).
func (b *bench) waitDelivered(ctx context.Context, since, n int) (int, error) {
	var delivered int
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := b.pool.QueryRow(ctx, `SELECT /* bench-probe */ count(*) FROM messages WHERE direction = 'outbound' AND status = 'delivered'`).Scan(&delivered); err != nil {
			return 0, err
		}
		if delivered-since >= n || time.Now().After(deadline) {
			return delivered - since, nil
		}
	}
}

// dbFigures reads what the database did during the run, per replied
// message: commits, WAL, top statements by total time, row writes per
// table, and indexes the run never used.
func dbFigures(ctx context.Context, conn *pgx.Conn, replies float64) ([][2]string, error) {
	var rows [][2]string
	var commits, rollbacks, walBytes, walRecords, walFPI int64
	if err := conn.QueryRow(ctx, `
		SELECT d.xact_commit, d.xact_rollback, w.wal_bytes::bigint, w.wal_records, w.wal_fpi
		FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()`).
		Scan(&commits, &rollbacks, &walBytes, &walRecords, &walFPI); err != nil {
		return nil, fmt.Errorf("pg_stat_database: %w", err)
	}
	var calls, nested, plans int64
	var execMS, planMS float64
	if err := conn.QueryRow(ctx, `
		SELECT COALESCE(sum(calls) FILTER (WHERE toplevel), 0)::bigint, COALESCE(sum(calls) FILTER (WHERE NOT toplevel), 0)::bigint,
		       COALESCE(sum(total_exec_time) FILTER (WHERE toplevel), 0)::float8,
		       COALESCE(sum(plans) FILTER (WHERE toplevel), 0)::bigint, COALESCE(sum(total_plan_time) FILTER (WHERE toplevel), 0)::float8
		FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query NOT LIKE '%bench-probe%'`).Scan(&calls, &nested, &execMS, &plans, &planMS); err != nil {
		return nil, fmt.Errorf("pg_stat_statements: %w", err)
	}
	plannings := "not counted (bench -track-planning counts them)"
	if plans > 0 {
		plannings = fmt.Sprintf("%.1f (%.2f ms)", float64(plans)/replies, planMS/replies)
	}
	rows = append(rows,
		[2]string{"statements per replied message (top level, every client; their execution time, lock waits included)", fmt.Sprintf("%.1f (%.2f ms)", float64(calls)/replies, execMS/replies)},
		[2]string{"nested statements per replied message (triggers, foreign key checks)", fmt.Sprintf("%.1f", float64(nested)/replies)},
		[2]string{"plannings per replied message (top level; a statement on a cached generic plan is not planned again)", plannings},
		[2]string{"commits / rollbacks per replied message", fmt.Sprintf("%.2f / %.2f", float64(commits)/replies, float64(rollbacks)/replies)},
		[2]string{"WAL per replied message", fmt.Sprintf("%.1f kB, %.0f records, %.2f full-page images", float64(walBytes)/1024/replies, float64(walRecords)/replies, float64(walFPI)/replies)},
	)

	st, err := conn.Query(ctx, `
		SELECT toplevel, calls, total_exec_time, rows, query FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query NOT LIKE '%bench-probe%' AND query NOT LIKE '%pg_stat_statements%'
		ORDER BY total_exec_time DESC LIMIT 20`)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_statements: %w", err)
	}
	for st.Next() {
		var top bool
		var n, nrows int64
		var total float64
		var q string
		if err := st.Scan(&top, &n, &total, &nrows, &q); err != nil {
			return nil, err
		}
		where := "top level"
		if !top {
			where = "nested (trigger or function; counted in its caller too)"
		}
		rows = append(rows, [2]string{"statement: " + shortQuery(q),
			fmt.Sprintf("%.3f ms/msg total, %.2f calls/msg, %.3f ms/call, %.1f rows/call; %s",
				total/replies, float64(n)/replies, total/float64(max(n, 1)), float64(nrows)/float64(max(n, 1)), where)})
	}
	if err := st.Err(); err != nil {
		return nil, err
	}

	tw, err := conn.Query(ctx, `
		SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables
		WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY n_tup_ins + n_tup_upd + n_tup_del DESC`)
	if err != nil {
		return nil, err
	}
	for tw.Next() {
		var name string
		var ins, upd, hot, del int64
		if err := tw.Scan(&name, &ins, &upd, &hot, &del); err != nil {
			return nil, err
		}
		rows = append(rows, [2]string{"row writes per replied message: " + name,
			fmt.Sprintf("%.2f inserted, %.2f updated (%.2f HOT), %.2f deleted", float64(ins)/replies, float64(upd)/replies, float64(hot)/replies, float64(del)/replies)})
	}
	if err := tw.Err(); err != nil {
		return nil, err
	}

	var unused []string
	iu, err := conn.Query(ctx, `
		SELECT s.relname || '.' || s.indexrelname FROM pg_stat_user_indexes s
		JOIN pg_index i ON i.indexrelid = s.indexrelid
		JOIN pg_stat_user_tables t ON t.relid = s.relid
		WHERE s.idx_scan = 0 AND NOT i.indisunique AND t.n_tup_ins + t.n_tup_upd > 0
		ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	for iu.Next() {
		var name string
		if err := iu.Scan(&name); err != nil {
			return nil, err
		}
		unused = append(unused, name)
	}
	if err := iu.Err(); err != nil {
		return nil, err
	}
	rows = append(rows, [2]string{"non-unique indexes of written tables never scanned in the run (maintained on every write)", strings.Join(unused, ", ")})
	return rows, nil
}

// statementTable is every statement of the run as tab-separated lines,
// most calls per replied message first: calls and time per replied
// message, rows per call, where it ran, and the statement on one line.
func statementTable(ctx context.Context, conn *pgx.Conn, replies float64) ([]byte, error) {
	rows, err := conn.Query(ctx, `
		SELECT toplevel, calls, total_exec_time, rows, plans, total_plan_time, query FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query NOT LIKE '%bench-probe%' AND query NOT LIKE '%pg_stat_statements%'
		ORDER BY calls DESC, total_exec_time DESC`)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_statements: %w", err)
	}
	var b strings.Builder
	b.WriteString("calls/msg\tms/msg\trows/call\tplans/msg\tplan ms/msg\twhere\tstatement\n")
	var top bool
	var n, nrows, plans int64
	var total, planMS float64
	var q string
	_, err = pgx.ForEachRow(rows, []any{&top, &n, &total, &nrows, &plans, &planMS, &q}, func() error {
		where := "top"
		if !top {
			where = "nested"
		}
		fmt.Fprintf(&b, "%.2f\t%.3f\t%.1f\t%.2f\t%.3f\t%s\t%s\n", float64(n)/replies, total/replies,
			float64(nrows)/float64(max(n, 1)), float64(plans)/replies, planMS/replies, where, strings.TrimSpace(spaces.ReplaceAllString(q, " ")))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pg_stat_statements: %w", err)
	}
	return []byte(b.String()), nil
}

var spaces = regexp.MustCompile(`\s+`)

// shortQuery is a statement's text on one line, cut to fit a table cell.
func shortQuery(q string) string {
	q = strings.TrimSpace(spaces.ReplaceAllString(q, " "))
	if len(q) > 160 {
		q = q[:160] + "…"
	}
	return "`" + strings.ReplaceAll(q, "|", "\\|") + "`"
}

// cpuSample is CPU time in clock ticks, by process group, at one moment.
type cpuSample struct {
	at                                        time.Time
	conversa, postgres, bench, redis, machine int64
	// Postgres's time split two ways: by process (client backends alive at
	// the sample; background processes alive at it, such as the WAL writer
	// and the checkpointer; the exited, through the postmaster's
	// cutime/cstime: autovacuum workers and closed connections), and its
	// kernel (system) time, which is mostly socket I/O per round trip and
	// WAL writes.
	pgBackends, pgBackground, pgExited, pgSystem int64
	// steal is time the hypervisor gave the machine's CPUs to others.
	steal int64
}

func (s cpuSample) minus(o cpuSample) cpuSample {
	return cpuSample{at: s.at, conversa: s.conversa - o.conversa, postgres: s.postgres - o.postgres,
		bench: s.bench - o.bench, redis: s.redis - o.redis, machine: s.machine - o.machine, steal: s.steal - o.steal,
		pgBackends: s.pgBackends - o.pgBackends, pgBackground: s.pgBackground - o.pgBackground,
		pgExited: s.pgExited - o.pgExited, pgSystem: s.pgSystem - o.pgSystem}
}

// takeCPU reads the CPU time of conversa (pid), of the Postgres cluster
// (its postmaster, its live backends, and through the postmaster's
// cutime/cstime every backend that has exited), of this process, of
// redis-server, and of the whole machine.
func takeCPU(conversa, postmaster int) cpuSample {
	s := cpuSample{at: time.Now(), conversa: procCPU(conversa), bench: procCPU(os.Getpid())}
	if pm, ok := procStat(postmaster); ok {
		s.postgres = pm.utime + pm.stime + pm.cutime + pm.cstime
		s.pgBackground = pm.utime + pm.stime
		s.pgExited = pm.cutime + pm.cstime
		s.pgSystem = pm.stime + pm.cstime
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, ok := procStat(pid)
		if !ok {
			continue
		}
		if stat.ppid == postmaster {
			t := stat.utime + stat.stime
			s.postgres += t
			s.pgSystem += stat.stime
			if isClientBackend(pid) {
				s.pgBackends += t
			} else {
				s.pgBackground += t
			}
		}
		if stat.comm == "redis-server" {
			s.redis += stat.utime + stat.stime
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		for i, v := range f[1:] {
			if i >= 8 { // guest time is already in user
				break
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			switch i {
			case 3, 4: // idle, iowait
			case 7:
				s.steal += n
			default:
				s.machine += n
			}
		}
	}
	return s
}

// isClientBackend tells a Postgres client backend from a background
// process by its title: "postgres: user database host(port) state" (or
// "[local]" for a socket) against "postgres: walwriter" and the like.
func isClientBackend(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	title := string(b)
	return strings.Contains(title, "(") || strings.Contains(title, "[local]")
}

type procStatFields struct {
	comm                         string
	ppid                         int
	utime, stime, cutime, cstime int64
}

// procStat parses /proc/pid/stat.
func procStat(pid int) (procStatFields, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStatFields{}, false
	}
	// comm is in parentheses and may hold spaces: split after the last ')'.
	open, closing := strings.IndexByte(string(b), '('), strings.LastIndexByte(string(b), ')')
	if open < 0 || closing < open {
		return procStatFields{}, false
	}
	f := strings.Fields(string(b[closing+1:])) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procStatFields{}, false
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(f[i-3], 10, 64); return n }
	return procStatFields{comm: string(b[open+1 : closing]), ppid: int(num(4)),
		utime: num(14), stime: num(15), cutime: num(16), cstime: num(17)}, true
}

// procCPU is pid's user and system time.
func procCPU(pid int) int64 {
	s, ok := procStat(pid)
	if !ok {
		return 0
	}
	return s.utime + s.stime
}

// loadAvg is the machine's 1, 5 and 15 minute load average.
func loadAvg() [3]float64 {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	for i, f := range strings.Fields(string(b))[:3] {
		out[i], _ = strconv.ParseFloat(f, 64)
	}
	return out
}

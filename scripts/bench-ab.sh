#!/usr/bin/env bash
# bench-ab.sh A B [N]: bench figure 7 (CPU per replied message) for two
# commits, alternating A B A B ... N times each (default 3), each run on its
# own private Postgres cluster, and a summary of the figures that move with
# a change. On a shared VM the CPU figures drift by ±10 % between runs of the
# same code, so one run of each says little; alternating spreads the drift
# over both. Run it alone on the machine (docs/operations.md, "Performance").
#
# Each commit is checked out into its own worktree under a temporary
# directory (the bench builds `conversa run` from its working directory), so
# the current checkout is not touched. Extra flags for the bench go in
# BENCH_AB_FLAGS (for example "-track-planning").
set -euo pipefail
if [[ $# -lt 2 ]]; then
	echo "usage: $0 COMMIT_A COMMIT_B [RUNS]" >&2
	exit 2
fi
a="$(git rev-parse --short "$1")"
b="$(git rev-parse --short "$2")"
runs="${3:-3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bench-ab.XXXXXX")"
cleanup() {
	git worktree remove --force "$work/$a" 2>/dev/null || true
	git worktree remove --force "$work/$b" 2>/dev/null || true
}
trap cleanup EXIT
for c in "$a" "$b"; do
	git worktree add --detach --force "$work/$c" "$c" >/dev/null
	(cd "$work/$c" && go build -o "$work/bench-$c" ./internal/bench)
done
# figure ANCHOR LOG: the number that follows ANCHOR (the end of a report
# row's name, as internal/bench/cpu.go prints it) in the bench's output. A
# row that is not there (a failed run, a renamed row) stops the script with
# the log's name rather than leaving an empty column.
figure() {
	local v
	v="$(grep -oE "$1 +[0-9.]+" "$2" | head -1 | grep -oE '[0-9.]+$')" || true
	if [[ -z "$v" ]]; then
		echo "bench-ab: no figure after \"$1\" in $2" >&2
		exit 1
	fi
	echo "$v"
}
summary="$work/summary.tsv"
printf 'commit\trun\tpostgres_ms\tconversa_ms\tmsg_per_s\tstatements\tcommits\tstolen_s\n' >"$summary"
for i in $(seq 1 "$runs"); do
	for c in "$a" "$b"; do
		log="$work/$c-$i.log"
		echo "bench-ab: $c, run $i of $runs ..." >&2
		# shellcheck disable=SC2086 # BENCH_AB_FLAGS is a list of flags
		(cd "$work/$c" && "$work/bench-$c" -only 7 -out "$work/$c-$i" ${BENCH_AB_FLAGS:-} >"$log" 2>&1) ||
			{ echo "bench-ab: the run failed, see $log" >&2; exit 1; }
		# One assignment each, so that set -e stops at a missing figure.
		pg="$(figure 'Postgres \(every process of the private cluster; goal ≤ 2 ms\)' "$log")"
		cv="$(figure 'conversa run \(goal ≤ 1.5 ms\)' "$log")"
		tp="$(figure 'fully replied throughput \(goal ≥ 600/s\)' "$log")"
		st="$(figure 'lock waits included\)' "$log")"
		cm="$(figure 'commits / rollbacks per replied message' "$log")"
		sl="$(figure 'every figure above is slower\)' "$log")"
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$i" "$pg" "$cv" "$tp" "$st" "$cm" "$sl" >>"$summary"
	done
done
column -t -s $'\t' "$summary"
echo
awk -F'\t' 'NR > 1 { n[$1]++; pg[$1] += $3; cv[$1] += $4; tp[$1] += $5 }
	END { for (c in n) printf "%s mean of %d: Postgres %.2f ms, conversa %.2f ms, %.0f messages/s\n", c, n[c], pg[c]/n[c], cv[c]/n[c], tp[c]/n[c] }' "$summary"
echo "reports and logs: $work" >&2

#!/bin/sh
# ingest.sh: attuned's end-to-end ingest benchmark (run by bench/run.sh, so by `make bench`).
# Prints figures; it is not a test and does not fail when a target is missed. It fails (exit 1)
# only when the figures cannot be trusted: a line answered with an error, a run that did not
# complete, the database not holding exactly the utterances sent, the daemon not stopping cleanly.
#
# Clients on loopback (build/bench/ingest, one epoll thread) stream realistic conversations
# (bench/gen_corpus.py --format protocol, whole conversations per connection) to build/attuned
# until the last ack, each run against a freshly started daemon with a fresh database
# (bench/ingest.ini, --listen 127.0.0.1:0, the port read from its log):
#   1. as fast as possible over 1, 4 and 64 connections (utterances/s durably stored and acked),
#      each INGEST_ROUNDS times, rounds interleaved; a run's best round is its figure;
#   2. paced at half of the best lines/s of step 1 over 64 connections (ack latency: the time
#      the covering ack is read minus the time the line was written; p50/p99/max); when the
#      best came from fewer connections, also "paced-same" at half of what 64 reached;
#   3. 1,000 idle connections held open, then the full load over 64 connections (the daemon's
#      VmRSS sampled every 50 ms and its VmHWM from /proc/PID/status).
# After each run: the daemon's CPU time per thread (loop, scoring workers, writer), SIGTERM (it
# must drain and exit 0), and sqlite3 counts of the stored utterances, which must equal the
# utterances sent (no loss, no duplicates).
#
# Output: the summary on stdout, also appended to $BUILD/bench/ingest-summary.txt; one JSON line
# per run in $BUILD/bench/ingest.jsonl; progress on stderr.
#
# Environment: BUILD (build), PYTHON (/usr/bin/python3), INGEST_CONVERSATIONS (20000),
# BENCH_SEED (1), INGEST_CONNECTIONS ("1 4 64"), INGEST_PACED_CONNECTIONS (64),
# INGEST_RATE_FRACTION (0.5), INGEST_IDLE (1000), INGEST_LOAD_CONNECTIONS (64),
# INGEST_CONFIG (bench/ingest.ini), INGEST_ROUNDS (3), INGEST_DB_DIR (where the temporary
# databases go: $BUILD/bench, a real disk, since commits are fsynced), INGEST_WINDOW (20000
# unacked lines per connection).
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
N=${INGEST_CONVERSATIONS:-20000}
SEED=${BENCH_SEED:-1}
CONNS=${INGEST_CONNECTIONS:-1 4 64}
PACED_CONNS=${INGEST_PACED_CONNECTIONS:-64}
FRACTION=${INGEST_RATE_FRACTION:-0.5}
IDLE=${INGEST_IDLE:-1000}
LOAD_CONNS=${INGEST_LOAD_CONNECTIONS:-64}
CONFIG=${INGEST_CONFIG:-bench/ingest.ini}
WINDOW=${INGEST_WINDOW:-20000}
ROUNDS=${INGEST_ROUNDS:-3}
OUT=$BUILD/bench
DAEMON=$BUILD/attuned
CLIENT=$OUT/ingest

say() { printf '== %s\n' "$*" >&2; }

[ -x "$DAEMON" ] || make BUILD="$BUILD" "$DAEMON"
[ -x "$CLIENT" ] || make BUILD="$BUILD" "$CLIENT"
command -v sqlite3 >/dev/null 2>&1 || { say "sqlite3 (the CLI) is needed to verify the stored rows"; exit 1; }
mkdir -p "$OUT"

# The daemon and the client each hold IDLE + LOAD_CONNS sockets.
want_fds=$((IDLE + LOAD_CONNS + 256))
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge "$want_fds" ]; then
    [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$want_fds" ] && ulimit -n "$want_fds"
else
    say "the open-file limit ($hard) is below $want_fds; the idle-connection run may fail"
fi

# ---- corpus -------------------------------------------------------------------------------
CORPUS=$OUT/ingest-corpus-n$N-s$SEED.ndjson
if [ ! -s "$CORPUS" ] || [ bench/gen_corpus.py -nt "$CORPUS" ]; then
    say "generating the protocol corpus: $N conversations, seed $SEED"
    "$PYTHON" bench/gen_corpus.py -n "$N" --seed "$SEED" --format protocol -o "$CORPUS.tmp"
    mv "$CORPUS.tmp" "$CORPUS"
fi

# ---- daemon control -----------------------------------------------------------------------
TMP=$(mktemp -d "${INGEST_DB_DIR:-$OUT}/ingest-run.XXXXXX")
DPID=""
SPID=""
cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
    [ -n "$DPID" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
CLK_TCK=$(getconf CLK_TCK)
RUNS=$TMP/runs.jsonl
: >"$RUNS"
FAILED=0

# start_daemon NAME: a fresh database, port from the log; sets DPID, PORT, WORKERS, SPID.
start_daemon() {
    DB=$TMP/$1.db
    LOG=$TMP/$1.log
    : >"$LOG" # exists before the background job opens it
    "$DAEMON" -c "$CONFIG" --listen 127.0.0.1:0 --db "$DB" 2>"$LOG" &
    DPID=$!
    PORT=""
    i=0
    while [ -z "$PORT" ]; do
        PORT=$(sed -n 's/.* listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$LOG" || true)
        if [ -z "$PORT" ]; then
            if ! kill -0 "$DPID" 2>/dev/null || [ $i -ge 100 ]; then
                say "attuned did not start:"
                cat "$LOG" >&2
                exit 1
            fi
            i=$((i + 1))
            sleep 0.1
        fi
    done
    WORKERS=$(sed -n 's/.* \([0-9][0-9]*\) workers.*/\1/p' "$LOG" || true)
    WORKERS=${WORKERS:-1}
    # VmRSS every 50 ms while the daemon lives.
    (while [ -r "/proc/$DPID/status" ]; do
         awk '/^VmRSS:/ {print $2}' "/proc/$DPID/status" 2>/dev/null || break
         sleep 0.05
     done) >"$TMP/$1.rss" &
    SPID=$!
}

# cpu_json: CPU seconds of the daemon's threads, told apart by the names attuned gives them
# (/proc/PID/task/TID/comm): the loop thread is the process's first (main), the scoring
# workers are score-N and the writer is writer; any other thread (libuv's threadpool) is "other".
cpu_json() {
    first=1
    for t in $(ls "/proc/$DPID/task" | sort -n); do
        name=$(cat "/proc/$DPID/task/$t/comm" 2>/dev/null || echo gone)
        [ "$first" = 1 ] && name=loop && first=0
        printf '%s ' "$name"
        awk '{print $14 + $15}' "/proc/$DPID/task/$t/stat" 2>/dev/null || echo 0
    done | awk -v hz="$CLK_TCK" '
        $1 == "loop" { loop += $2; next }
        $1 ~ /^score-/ { work += $2; next }
        $1 == "writer" { writer += $2; next }
        { other += $2 }
        END { printf "{\"loop\":%.2f,\"workers\":%.2f,\"writer\":%.2f,\"other\":%.2f}",
                     loop / hz, work / hz, writer / hz, other / hz }'
}

# finish_run NAME CLIENT_STATUS: daemon figures, SIGTERM, database counts, one JSON line.
finish_run() {
    name=$1
    crc=$2
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$DPID/status")
    rss_end=$(awk '/^VmRSS:/ {print $2}' "/proc/$DPID/status")
    cpu=$(cpu_json)
    # The machine's busy CPU seconds (all processes) and steal while the client ran.
    machine=$(echo "$STAT0 $STAT1" | awk -v hz="$CLK_TCK" '{
        busy = ($13 + $14 + $15 + $18 + $19) - ($2 + $3 + $4 + $7 + $8)
        printf "{\"busy_cpu_s\":%.2f,\"steal_s\":%.2f}", busy / hz, ($20 - $9) / hz }')
    kill -TERM "$DPID"
    drc=0
    wait "$DPID" || drc=$?
    DPID=""
    kill "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    SPID=""
    rss_max=$(sort -n "$TMP/$name.rss" | tail -n 1)
    counts=$(sqlite3 "$DB" "SELECT count(*) FROM utterances;
        SELECT count(*) FROM (SELECT DISTINCT conversation_id, seq FROM utterances);
        SELECT count(*) FROM conversations;" | tr '\n' ' ')
    set -- $counts
    client=$(cat "$TMP/$name.json")
    [ -n "$client" ] || client='{}'
    printf '{"run":"%s","client_status":%d,"client":%s,"machine":%s,"daemon":{"workers":%s,"exit":%d,"vmhwm_kb":%s,"vmrss_end_kb":%s,"vmrss_max_sampled_kb":%s,"cpu_s":%s},"db":{"utterances":%s,"distinct_utterances":%s,"conversations":%s}}\n' \
        "$name" "$crc" "$client" "$machine" "$WORKERS" "$drc" "${hwm:-0}" "${rss_end:-0}" "${rss_max:-0}" \
        "$cpu" "$1" "$2" "$3" >>"$RUNS"
    [ "$drc" = 0 ] || { say "attuned exited with status $drc after $name:"; tail -n 20 "$TMP/$name.log" >&2; }
    rm -f "$DB" "$DB-wal" "$DB-shm"
}

# run_client NAME CONNECTIONS RATE IDLE
run_client() {
    name=$1
    start_daemon "$name"
    say "$name: $2 connection(s), rate ${3} lines/s (0 = unpaced), $4 idle, attuned pid $DPID port $PORT"
    crc=0
    STAT0=$(head -n 1 /proc/stat)
    "$CLIENT" --window "$WINDOW" --label "$name" 127.0.0.1 "$PORT" "$CORPUS" "$2" "$3" "$4" \
        >"$TMP/$name.json" || crc=$?
    STAT1=$(head -n 1 /proc/stat)
    [ "$crc" = 0 ] || FAILED=1
    finish_run "$name" "$crc"
}

# ---- runs ---------------------------------------------------------------------------------
# Each unpaced run ROUNDS times, the rounds interleaved (1, 4, 64, 1, 4, 64, ...): this VM's speed
# moves by a fifth from one minute to the next, and the best round of each is its figure.
round=1
while [ "$round" -le "$ROUNDS" ]; do
    for c in $CONNS; do
        name="max-$c"
        [ "$round" -gt 1 ] && name="max-$c.$round"
        run_client "$name" "$c" 0 0
    done
    round=$((round + 1))
done
# Paced: FRACTION of the best rate of any connection count; and, when the best came from another
# connection count, FRACTION of what PACED_CONNS connections reached (for reference).
set -- $("$PYTHON" -c '
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def rate(r):
    return r["client"].get("lines_per_s", 0) if r["client"].get("complete") else 0
best = max(runs, key=rate, default=None)
same = max((r for r in runs if r["run"].split(".")[0] == "max-" + sys.argv[3]), key=rate,
           default=None)
f = float(sys.argv[2])
a = int(f * rate(best)) if best else 0
b = int(f * rate(same)) if same and same is not best else 0
print(a, b)' "$RUNS" "$FRACTION" "$PACED_CONNS")
RATE=${1:-0}
RATE_SAME=${2:-0}
if [ "$RATE" -gt 0 ]; then
    run_client "paced" "$PACED_CONNS" "$RATE" 0
else
    say "no unpaced run completed; skipping the paced run"
fi
if [ "$RATE_SAME" -gt 0 ]; then
    run_client "paced-same" "$PACED_CONNS" "$RATE_SAME" 0
fi
run_client "idle+load" "$LOAD_CONNS" 0 "$IDLE"
cp "$RUNS" "$OUT/ingest.jsonl"

# ---- summary ------------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (+ uncommitted changes)" || true)
cpu=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)
SUMMARY=$TMP/summary.txt
export SUM_WHEN="$(date -u +%Y-%m-%dT%H:%M:%SZ)" SUM_COMMIT="$commit$dirty" SUM_CPU="$cpu"
export SUM_NPROC="$(nproc)" SUM_KERNEL="$(uname -r)" SUM_SQLITE="$(sqlite3 --version | cut -d' ' -f1)"
export SUM_CORPUS="bench/gen_corpus.py -n $N --seed $SEED --format protocol"
export SUM_DAEMON="$CONFIG (--listen 127.0.0.1:0, fresh database per run in ${INGEST_DB_DIR:-$OUT})"
export SUM_WINDOW="$WINDOW" SUM_ROUNDS="$ROUNDS"
"$PYTHON" - "$RUNS" "$FRACTION" "$IDLE" >"$SUMMARY" <<'EOF' || FAILED=1
import json, os, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
fraction, idle = float(sys.argv[2]), int(sys.argv[3])
E = os.environ
print("attuned end-to-end ingest benchmark (bench/ingest.sh)")
print()
print(f"when: {E['SUM_WHEN']}; commit {E['SUM_COMMIT']}")
print(f"machine: {E['SUM_NPROC']} CPUs, {E['SUM_CPU']}; kernel {E['SUM_KERNEL']}; "
      f"SQLite {E['SUM_SQLITE']}")
print(f"corpus: {E['SUM_CORPUS']}")
print(f"daemon: {E['SUM_DAEMON']}; WAL, synchronous=FULL")
print(f"client: build/bench/ingest, one epoll thread on the same machine, window "
      f"{E['SUM_WINDOW']} lines per connection; latency = ack read - line written")
print(f"rounds: each unpaced run {E['SUM_ROUNDS']} times, interleaved (max-N, max-N.2, ...); "
      "its best round is its figure")
print()
hdr = ("run", "conns", "idle", "utterances", "secs", "utt/s", "lines/s", "p50 ms", "p99 ms",
       "max ms", "errors", "stored", "VmHWM MB")
fmt = "{:<10} {:>5} {:>5} {:>10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10} {:>8}"
print(fmt.format(*hdr))
print("-" * 113)
bad = []
for r in runs:
    c, d, db = r["client"], r["daemon"], r["db"]
    if not c:
        print(f"{r['run']:<10} (client failed with status {r['client_status']})")
        bad.append(f"{r['run']}: the client failed (status {r['client_status']})")
        continue
    print(fmt.format(r["run"], c["connections"], c["idle_connections"], f"{c['utterances']:,}",
                     f"{c['seconds']:.2f}", f"{c['utterances_per_s']:,}", f"{c['lines_per_s']:,}",
                     f"{c['latency_ms']['p50']:.1f}", f"{c['latency_ms']['p99']:.1f}",
                     f"{c['latency_ms']['max']:.1f}", c["errors"], f"{db['utterances']:,}",
                     f"{d['vmhwm_kb'] / 1024:.1f}"))
    if not c["complete"]:
        bad.append(f"{r['run']}: not every line was acked ({c['lines_acked']} of {c['lines']})")
    if c["errors"]:
        bad.append(f"{r['run']}: {c['errors']} error replies")
    if db["utterances"] != c["utterances"] or db["distinct_utterances"] != db["utterances"]:
        bad.append(f"{r['run']}: {db['utterances']} utterances stored "
                   f"({db['distinct_utterances']} distinct), {c['utterances']} sent")
    if db["conversations"] != c["conversations"]:
        bad.append(f"{r['run']}: {db['conversations']} conversations stored, "
                   f"{c['conversations']} sent")
    if d["exit"] != 0:
        bad.append(f"{r['run']}: attuned exited with status {d['exit']} on SIGTERM")
    if c["idle_connections"] and c["idle_alive"] != c["idle_connections"]:
        bad.append(f"{r['run']}: only {c['idle_alive']} of {c['idle_connections']} idle "
                   "connections were still open at the end")
print()
print("CPU seconds during each run (share of its wall time; the machine has "
      f"{E['SUM_NPROC']} CPUs = {100 * int(E['SUM_NPROC'])}%)")
print(f"{'run':<10} {'daemon loop':>14} {'workers':>14} {'writer':>14} {'daemon total':>14} "
      f"{'client':>14} {'other procs':>14}")
for r in runs:
    c, cpu, m = r["client"], r["daemon"]["cpu_s"], r.get("machine", {})
    secs = c.get("seconds") or 0
    def cell(v):
        return f"{v:.2f} ({100 * v / secs:.0f}%)" if secs else f"{v:.2f}"
    total = cpu["loop"] + cpu["workers"] + cpu["writer"] + cpu["other"]
    client = c.get("client_cpu_s", 0)
    other = max(0.0, m.get("busy_cpu_s", 0) - total - client)
    print(f"{r['run']:<10} {cell(cpu['loop']):>14} {cell(cpu['workers']):>14} "
          f"{cell(cpu['writer']):>14} {cell(total):>14} {cell(client):>14} {cell(other):>14}")
print("(daemon: per thread from /proc, start-up included; client: its own rusage, corpus loading "
      "included; other procs: the rest of the machine's busy time while the client ran - "
      "anything above a few % means the figures were taken on a busy machine)")
print()
ncpu = int(E["SUM_NPROC"])
print("daemon CPU per utterance, in microseconds (less sensitive to a busy machine than the rates; "
      "the bounds are what that cost allows)")
print(f"{'run':<10} {'loop':>8} {'workers':>8} {'writer':>8} {'total':>8}   "
      f"{'writer-bound utt/s':>18} {'loop-bound utt/s':>16} {f'{ncpu}-CPU-bound utt/s':>18}")
for r in runs:
    c, cpu = r["client"], r["daemon"]["cpu_s"]
    n = c.get("utterances") or 0
    if not n:
        continue
    us = {k: 1e6 * cpu[k] / n for k in ("loop", "workers", "writer")}
    tot = sum(us.values()) + 1e6 * cpu["other"] / n
    def bound(v):
        return f"{1e6 / v:,.0f}" if v > 0 else "-"
    print(f"{r['run']:<10} {us['loop']:>8.2f} {us['workers']:>8.2f} {us['writer']:>8.2f} "
          f"{tot:>8.2f}   {bound(us['writer']):>18} {bound(us['loop']):>16} "
          f"{bound(tot / ncpu):>18}")
print("(one writer thread and one loop thread: each bounds the rate by itself; all threads together "
      f"cannot exceed {ncpu} CPUs, and the client and the kernel's loopback work need their share)")
print()
done = [r for r in runs if r["client"].get("complete")]
unpaced = [r for r in done if r["client"]["target_rate_lines_per_s"] == 0]
best = max(unpaced, key=lambda r: r["client"]["utterances_per_s"], default=None)
paced = next((r for r in done if r["run"] == "paced"), None)
mem = next((r for r in runs if r["run"] == "idle+load"), None)
def verdict(ok):
    return "met" if ok else "NOT MET"
print(f"{'target':<62} {'measured':>20}  verdict")
print("-" * 93)
if best:
    v = best["client"]["utterances_per_s"]
    m = f"{v:,} ({best['run']})"
    print(f"{'>= 100,000 utterances/s durable and acked':<62} {m:>20}  {verdict(v >= 100000)}")
if paced:
    v = paced["client"]["latency_ms"]["p99"]
    rate = paced["client"]["target_rate_lines_per_s"]
    ach = paced["client"]["lines_per_s"]
    label = f"p99 ack latency <= 250 ms at {fraction:.0%} rate ({rate:,.0f} lines/s)"
    print(f"{label:<62} {f'{v:.1f} ms':>20}  {verdict(v <= 250)}")
    print(f"  (paced run achieved {ach:,} lines/s; p50 "
          f"{paced['client']['latency_ms']['p50']:.1f} ms, max "
          f"{paced['client']['latency_ms']['max']:.1f} ms)")
same = next((r for r in done if r["run"] == "paced-same"), None)
if same:
    c = same["client"]
    print(f"  (for reference, paced-same: {fraction:.0%} of what {c['connections']} connections "
          f"reached, {c['target_rate_lines_per_s']:,.0f} lines/s: p99 "
          f"{c['latency_ms']['p99']:.1f} ms, p50 {c['latency_ms']['p50']:.1f} ms)")
if mem:
    v = mem["daemon"]["vmhwm_kb"] / 1024
    s = mem["daemon"]["vmrss_max_sampled_kb"] / 1024
    print(f"{f'daemon memory <= 200 MB, {idle:,} idle conns + full load (VmHWM)':<62} "
          f"{f'{v:.1f} MB':>20}  {verdict(v <= 200)}")
    print(f"  (highest sampled VmRSS {s:.1f} MB; {mem['client'].get('idle_alive', 0)} of "
          f"{idle} idle connections still open at the end)")
print()
if bad:
    print("PROBLEMS (the figures above cannot be trusted):")
    for b in bad:
        print("  - " + b)
    sys.exit(1)
print("checks: every run complete, 0 error replies, stored utterances = sent (no loss, no "
      "duplicates), clean SIGTERM")
EOF
cat "$SUMMARY"
{ cat "$SUMMARY"; echo; } >>"$OUT/ingest-summary.txt"
echo "(appended to $OUT/ingest-summary.txt; per-run JSON in $OUT/ingest.jsonl)"
exit "$FAILED"

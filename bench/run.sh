#!/bin/sh
# run.sh: attune's scoring benchmark (`make bench`). Prints utterances/s and MB/s of at_score on
# one core, sentiment alone and full scoring, next to the npm scorers vader-sentiment and
# sentiment on the same corpus, and checks that the cost of an utterance does not grow with
# patterns that cannot match it (a copy of the lexicons with 10x marker patterns). The summary
# also goes to $BUILD/bench/score-summary.txt.
#
# Then the end-to-end ingest benchmark of attuned (bench/ingest.sh: clients on loopback stream
# conversations to the daemon until the last ack; its summary goes to
# $BUILD/bench/ingest-summary.txt).
#
# Steps: generate the corpus (bench/gen_corpus.py, cached in $BUILD/bench/), install the npm
# peers into bench/node_modules (node and npm from Debian when missing), build the 10x lexicon
# copy in a temporary directory, then BENCH_ROUNDS rounds of: bench_score (both models,
# interleaved, one measurement each) and peers.js pinned to the same CPU (one measurement each);
# the summary (bench/summary.py) reports each scorer's best round. A round measures attune and
# its peers within seconds of each other, so that the VM's speed, which drifts by a fifth from
# minute to minute, weighs on both sides of a ratio alike. Then bench_score once more per model
# for memory.
#
# Environment: BUILD (build), ATTUNE_LEXICONS (lexicons), BENCH_CONVERSATIONS (20000),
# BENCH_SEED (1), BENCH_SECONDS (2, minimum CPU seconds per measurement), BENCH_ROUNDS (3, best of),
# BENCH_CPU (the highest CPU this process may use), PYTHON (/usr/bin/python3),
# BENCH_SKIP_PEERS (1 to skip the npm peers), BENCH_SKIP_INGEST (1 to skip bench/ingest.sh, whose
# own settings are described in it).
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
LEX=${ATTUNE_LEXICONS:-lexicons}
N=${BENCH_CONVERSATIONS:-20000}
SEED=${BENCH_SEED:-1}
SECS=${BENCH_SECONDS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
OUT=$BUILD/bench
BIN=$OUT/bench_score

say() { printf '== %s\n' "$*" >&2; }

[ -x "$BIN" ] || make BUILD="$BUILD" "$BIN"
mkdir -p "$OUT"

# ---- corpus -------------------------------------------------------------------------------
CORPUS=$OUT/corpus-n$N-s$SEED.ndjson
# newer A B: A was modified after B (POSIX sh has no test -nt).
newer() { [ -n "$(find "$1" -newer "$2" 2>/dev/null)" ]; }
if [ ! -s "$CORPUS" ] || newer bench/gen_corpus.py "$CORPUS"; then
    say "generating the corpus: $N conversations, seed $SEED"
    "$PYTHON" bench/gen_corpus.py -n "$N" --seed "$SEED" --format utterances -o "$CORPUS.tmp"
    mv "$CORPUS.tmp" "$CORPUS"
fi

# ---- CPU ----------------------------------------------------------------------------------
CPU=${BENCH_CPU:-$("$PYTHON" -c 'import os; print(max(os.sched_getaffinity(0)))')}

# ---- npm peers ----------------------------------------------------------------------------
peers_ok=0
if [ "${BENCH_SKIP_PEERS:-0}" != 1 ]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        say "node or npm missing: installing Debian's nodejs and npm"
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y --no-install-recommends nodejs npm >&2 ||
            { $SUDO apt-get update >&2 &&
              $SUDO apt-get install -y --no-install-recommends nodejs npm >&2; } ||
            say "could not install node and npm; the peer figures will be missing"
    fi
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        stamp=bench/node_modules/.package-lock.json
        if [ ! -d bench/node_modules/vader-sentiment ] || [ ! -d bench/node_modules/sentiment ] ||
           [ ! -f "$stamp" ] || newer bench/package-lock.json "$stamp"; then
            say "installing the npm peers into bench/node_modules"
            (cd bench && npm ci --no-audit --no-fund >&2) ||
                (cd bench && npm install --no-audit --no-fund >&2) ||
                say "npm could not install the peers; their figures will be missing"
        fi
        [ -d bench/node_modules/vader-sentiment ] && [ -d bench/node_modules/sentiment ] &&
            peers_ok=1
    fi
fi

# ---- 10x lexicons -------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/attune-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
# Both models come from one snapshot of the lexicons, so that an edit made while the benchmark
# runs cannot make them differ by more than the padding.
cp -R "$LEX" "$TMP/lexicons"
LEX=$TMP/lexicons
say "building the 10x pattern copy of the lexicons"
"$PYTHON" bench/scale_lexicon.py --factor 10 --seed "$SEED" --avoid "$CORPUS" \
    "$LEX" "$TMP/lexicons-10x"

# ---- measurements -------------------------------------------------------------------------
rm -f "$OUT/score.jsonl" "$OUT/memory-normal.jsonl" "$OUT/memory-10x.jsonl" "$OUT/peers.jsonl"
if [ "$peers_ok" = 1 ] && command -v taskset >/dev/null 2>&1; then PIN="taskset -c $CPU"; else PIN=""; fi
round=1
while [ "$round" -le "$ROUNDS" ]; do
    say "round $round of $ROUNDS: attune sentiment-only, full, full with 10x patterns (>= ${SECS} CPU s each)"
    "$BIN" --cpu "$CPU" --seconds "$SECS" --repeats 1 --json "$TMP/score-round.jsonl" \
        --lexicons "$LEX" --compare "$TMP/lexicons-10x" "$CORPUS" >&2
    cat "$TMP/score-round.jsonl" >>"$OUT/score.jsonl"
    if [ "$peers_ok" = 1 ]; then
        say "round $round of $ROUNDS: npm peers vader-sentiment and sentiment (>= ${SECS} CPU s each)"
        $PIN node bench/peers.js --seconds "$SECS" --repeats 1 "$CORPUS" \
            >>"$OUT/peers.jsonl" || say "peers.js failed; the peer figures will be missing"
    fi
    round=$((round + 1))
done
say "attune: memory, one process per model"
"$BIN" --cpu "$CPU" --modes none --json "$OUT/memory-normal.jsonl" --lexicons "$LEX" \
    "$CORPUS" >/dev/null
"$BIN" --cpu "$CPU" --modes none --json "$OUT/memory-10x.jsonl" \
    --lexicons "$TMP/lexicons-10x" "$CORPUS" >/dev/null

# ---- summary ------------------------------------------------------------------------------
echo >&2
"$PYTHON" bench/summary.py --score "$OUT/score.jsonl" --memory-normal "$OUT/memory-normal.jsonl" \
    --memory-10x "$OUT/memory-10x.jsonl" --peers "$OUT/peers.jsonl" \
    --rounds "$ROUNDS" --corpus-note "bench/gen_corpus.py -n $N --seed $SEED" \
    >"$OUT/score-summary.txt"
cat "$OUT/score-summary.txt"
echo "(written to $OUT/score-summary.txt)"

# ---- end-to-end ingest ---------------------------------------------------------------------
if [ "${BENCH_SKIP_INGEST:-0}" != 1 ]; then
    echo
    say "end-to-end ingest: bench/ingest.sh"
    BUILD="$BUILD" PYTHON="$PYTHON" BENCH_SEED="$SEED" bench/ingest.sh
fi

#!/bin/sh
# store_identity.sh: checks that two builds of attuned store exactly the same data. For a change
# meant to make the writer cheaper without changing what it stores.
#
#   bench/store_identity.sh OTHER_BUILD [BUILD]
#
# Streams the ingest benchmark's corpus (bench/gen_corpus.py --format protocol, generated like
# bench/ingest.sh does when missing) into a freshly started daemon of each build (bench/ingest.ini,
# --listen 127.0.0.1:0, a fresh database; over INGEST_CONNECTIONS connections, default 1),
# stops it with SIGTERM, and dumps every table with bench/dump_tables.py: rows in key order, every
# column but the wall-clock ones (created_at, updated_at, deferred_at). Prints each dump's md5
# and exits 0 when they are equal, 1 when they differ (the first differing lines are shown).
#
# Environment: PYTHON (/usr/bin/python3), INGEST_CONVERSATIONS (20000), BENCH_SEED (1),
# INGEST_CONNECTIONS (1), INGEST_DB_DIR (where the temporary databases go: BUILD/bench).
set -eu

cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/store_identity.sh OTHER_BUILD [BUILD]" >&2; exit 2; }
OTHER=$1
BUILD=${2:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
N=${INGEST_CONVERSATIONS:-20000}
SEED=${BENCH_SEED:-1}
CONNS=${INGEST_CONNECTIONS:-1}
CLIENT=$BUILD/bench/ingest
for b in "$OTHER" "$BUILD"; do
    [ -x "$b/attuned" ] || { echo "no $b/attuned: build it first" >&2; exit 2; }
done
[ -x "$CLIENT" ] || make BUILD="$BUILD" "$CLIENT"

CORPUS=$BUILD/bench/ingest-corpus-n$N-s$SEED.ndjson
if [ ! -s "$CORPUS" ]; then
    mkdir -p "$BUILD/bench"
    "$PYTHON" bench/gen_corpus.py -n "$N" --seed "$SEED" --format protocol -o "$CORPUS.tmp"
    mv "$CORPUS.tmp" "$CORPUS"
fi

TMP=$(mktemp -d "${INGEST_DB_DIR:-$BUILD/bench}/identity.XXXXXX")
DPID=""
cleanup() {
    [ -n "$DPID" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ingest NAME DAEMON: streams the corpus into a fresh daemon, stops it, dumps its tables.
ingest() {
    db=$TMP/$1.db
    log=$TMP/$1.log
    : >"$log"
    "$2" -c bench/ingest.ini --listen 127.0.0.1:0 --db "$db" 2>"$log" &
    DPID=$!
    port=""
    i=0
    while [ -z "$port" ]; do
        port=$(sed -n 's/.* listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log")
        if [ -z "$port" ]; then
            if ! kill -0 "$DPID" 2>/dev/null || [ $i -ge 100 ]; then
                echo "$2 did not start:" >&2
                cat "$log" >&2
                exit 2
            fi
            i=$((i + 1))
            sleep 0.1
        fi
    done
    "$CLIENT" --label "$1" 127.0.0.1 "$port" "$CORPUS" "$CONNS" 0 0 >"$TMP/$1.json" ||
        { echo "$1: the client failed" >&2; exit 2; }
    kill -TERM "$DPID"
    rc=0
    wait "$DPID" || rc=$?
    DPID=""
    [ "$rc" = 0 ] || { echo "$2 exited with $rc on SIGTERM" >&2; exit 2; }
    "$PYTHON" bench/dump_tables.py "$db" >"$TMP/$1.dump"
    printf '%s  %s (%s lines)\n' "$(md5sum <"$TMP/$1.dump" | cut -d' ' -f1)" "$2" \
        "$(wc -l <"$TMP/$1.dump")"
}

ingest other "$OTHER/attuned"
ingest this "$BUILD/attuned"
if cmp -s "$TMP/other.dump" "$TMP/this.dump"; then
    echo "identical: every table, every row, every column but the wall-clock ones"
    exit 0
fi
echo "DIFFERENT stored content:"
diff "$TMP/other.dump" "$TMP/this.dump" | head -n 20
exit 1

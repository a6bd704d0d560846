#!/bin/sh
# demo.sh (make demo): what attune tells a newcomer, in about a minute. Starts a fresh attuned
# on a temporary port and database, streams 10,000 generated conversations (bench/gen_corpus.py:
# empathetic and curt agents, calm and furious customers, outcomes, some callers coming back),
# waits for every ack, stops the daemon and prints every report.
set -eu
BUILD=${BUILD:-build}
N=${DEMO_CONVERSATIONS:-10000}
TMP=$(mktemp -d)
DPID=""
cleanup() {
    [ -n "$DPID" ] && kill "$DPID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

echo "== generating $N conversations"
/usr/bin/python3 bench/gen_corpus.py -n "$N" --seed 7 --format protocol --late-outcomes 0.3 \
    -o "$TMP/corpus.ndjson"
echo "   $(wc -l < "$TMP/corpus.ndjson") protocol lines"

"$BUILD/attuned" --listen 127.0.0.1:0 --metrics-listen "" --db "$TMP/attune.db" \
    --log-level warn 2> "$TMP/attuned.log" &
DPID=$!
PORT=""
i=0
while [ -z "$PORT" ]; do
    # The port is logged at info; ask for it at warn level through the lock file instead.
    PORT=$(sed -n 's/.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$TMP/attune.db-attuned.lock" 2>/dev/null || true)
    i=$((i + 1))
    if [ $i -gt 200 ]; then
        echo "attuned did not start:" >&2
        cat "$TMP/attuned.log" >&2
        exit 1
    fi
    sleep 0.05
done
echo "== streaming into attuned on 127.0.0.1:$PORT over 4 connections"
"$BUILD/bench/ingest" 127.0.0.1 "$PORT" "$TMP/corpus.ndjson" 4 | tail -n 1
kill -TERM "$DPID"
wait "$DPID"
DPID=""
echo "== stored: $(sqlite3 "$TMP/attune.db" 'select count(*) from conversations') conversations," \
     "$(sqlite3 "$TMP/attune.db" 'select count(*) from utterances') utterances," \
     "$(sqlite3 "$TMP/attune.db" 'select count(*) from markers') markers"
for report in resolution-time satisfaction escalations repeat-contacts agents fatigue trend; do
    echo
    echo "== attune report $report"
    case $report in
    resolution-time | escalations) "$BUILD/attune" report "$report" --db "$TMP/attune.db" --by queue ;;
    agents | fatigue | trend) "$BUILD/attune" report "$report" --db "$TMP/attune.db" | head -n 24 ;;
    *) "$BUILD/attune" report "$report" --db "$TMP/attune.db" ;;
    esac
done

"""attuned under faults: kill -9 at random moments under load with a client that resends, a store
that fills up (max_db_mb, and a real full filesystem when the tests run as root), SIGTERM while
it is full, an analyst's long read transaction, an analyst holding the write lock. Each test
ends with the same check: every line the client saw acknowledged is stored exactly once, and
PRAGMA integrity_check is ok. After a kill, every conversation's metrics must also catch up with
its stored turns once the restarted daemon is idle.

The kill -9 test picks its kill moments from a seeded generator and prints the seed; rerun a
failure with ATTUNE_FAULT_SEED=<seed>."""
import http.client
import os
import random
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import time

import pytest

from conftest import ATTUNED, Closed, integrity_ok, query, utt
from test_daemon_load import TEXTS, Pump, encode, marker_counts, under_asan
from test_metrics import METRIC_COLUMNS

pytestmark = pytest.mark.slow

METRICS_ON = re.compile(r"metrics on 127\.0\.0\.1:(\d+)")


# ---- helpers -------------------------------------------------------------------------------

def stored_keys(db):
    """The (conversation_id, seq) of every stored utterance, asserting none is stored twice."""
    con = sqlite3.connect(str(db), timeout=10)
    try:
        rows = con.execute("SELECT conversation_id, seq FROM utterances").fetchall()
        assert con.execute("SELECT COUNT(*) FROM (SELECT 1 FROM utterances GROUP BY "
                           "conversation_id, seq HAVING COUNT(*) > 1)").fetchone() == (0,)
    finally:
        con.close()
    keys = set(rows)
    assert len(keys) == len(rows), "%d utterances stored twice" % (len(rows) - len(keys))
    return keys


def assert_exactly_once(db, acked, sent=None):
    """Every acknowledged key is stored, once; with `sent`, nothing else is stored either.
    Then PRAGMA integrity_check (and foreign_key_check) must be ok."""
    stored = stored_keys(db)
    lost = set(acked) - stored
    assert not lost, "%d acknowledged utterances are not stored, e.g. %s" % (
        len(lost), sorted(lost)[:3])
    if sent is not None:
        assert stored <= set(sent), "stored but never sent: %s" % sorted(stored - set(sent))[:3]
    integrity_ok(db)
    return stored


# The per-conversation metrics that SQL can recompute from the stored utterances on its own
# (ANALYTICS.md section 2), beside what attuned stored: turn counts, the customer's lowest and
# mean sentiment, peak frustration and whether a customer turn threatened to churn (category
# bit 16, schema/README.md).
FRESH_METRICS_SQL = """
SELECT c.conversation_id,
       c.turns, c.agent_turns, c.customer_turns, c.customer_sentiment_min,
       c.customer_sentiment_mean, c.frustration_peak, c.churn_threat,
       u.turns, u.agent_turns, u.customer_turns, u.smin, u.smean, u.fpeak, u.churn
  FROM conversations c JOIN (
       SELECT conversation_id, COUNT(*) AS turns, SUM(speaker = 'agent') AS agent_turns,
              SUM(speaker = 'customer') AS customer_turns,
              MIN(CASE WHEN speaker = 'customer' THEN compound END) AS smin,
              AVG(CASE WHEN speaker = 'customer' THEN compound END) AS smean,
              MAX(CASE WHEN speaker = 'customer' THEN frustration_score END) AS fpeak,
              MAX(speaker = 'customer' AND (category_mask >> 16) & 1) AS churn
         FROM utterances GROUP BY conversation_id) u USING (conversation_id)
"""


def stale_metrics(db):
    """The conversations whose stored metrics differ from a recomputation of their stored
    utterances (FRESH_METRICS_SQL)."""
    con = sqlite3.connect(str(db), timeout=10)
    try:
        rows = con.execute(FRESH_METRICS_SQL).fetchall()
    finally:
        con.close()

    def same(a, b):
        if a is None or b is None:
            return a is b
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))

    return [r[0] for r in rows if not all(same(r[1 + k], r[8 + k]) for k in range(7))]


def metrics_port(d):
    m = METRICS_ON.search(d.log())
    assert m, "no metrics endpoint in the log:\n" + d.log()[-2000:]
    return int(m.group(1))


def http_get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def scrape(port):
    """The unlabelled samples of /metrics, by name."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    out = {}
    for line in body.splitlines():
        m = re.match(r"([a-z_]+) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def wal_size(db):
    try:
        return os.path.getsize(str(db) + "-wal")
    except FileNotFoundError:
        return 0


def wal_header(db):
    """The WAL header's checkpoint sequence number and salts: they change when the WAL
    restarts from its beginning, which it only does once everything in it is checkpointed."""
    with open(str(db) + "-wal", "rb") as f:
        head = f.read(24)
    return struct.unpack(">3I", head[12:24]) if len(head) == 24 else None


def wait_for(what, cond, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "not within %ss: %s" % (timeout, what)
        time.sleep(step)


def pump_until(pump, cond, timeout, what):
    """Sends and reads until cond() holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "not within %ss: %s (acked %d)" % (
            timeout, what, pump.c.acked)
        pump.step()


def pump_until_acks_stop(pump, quiet_s, timeout):
    """Sends and reads until no ack has arrived for quiet_s seconds."""
    deadline = time.monotonic() + timeout
    last, since = pump.c.acked, time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "acks did not stop within %ss" % timeout
        pump.step()
        if pump.c.acked != last:
            last, since = pump.c.acked, time.monotonic()


class Stream:
    """An endless client stream: line i is turn i // W % T of conversation
    W * (i // (W * T)) + i % W, so W conversations are interleaved at any time, each in order.
    Lines are encoded once and kept."""
    def __init__(self, prefix, pad="", W=200, T=50):
        self.prefix = prefix
        self.pad = pad
        self.W, self.T = W, T
        self.lines = []

    def key(self, i):
        block, j = divmod(i, self.W * self.T)
        return ("%s-%d" % (self.prefix, block * self.W + j % self.W), j // self.W)

    def text_index(self, i):
        return i % len(TEXTS)

    def encoded(self, start, stop):
        for i in range(len(self.lines), stop):
            cid, seq = self.key(i)
            m = utt(cid, seq, text=TEXTS[self.text_index(i)])
            if self.pad:
                m["pad"] = self.pad  # an unknown field: read, parsed, ignored
            self.lines.append(encode([m]))
        return b"".join(self.lines[start:stop])

    def keys(self, start, stop):
        return {self.key(i) for i in range(start, stop)}


# ---- kill -9 ---------------------------------------------------------------------------------

def test_kill9_at_random_moments_under_load_with_a_resending_client(attuned, tmp_path):
    """20 times: the client streams pipelined utterances of many conversations into a daemon
    that is SIGKILLed at a random moment, restarted on the same database, and sent everything
    after the last cumulative ack again. Whatever was acknowledged is stored after every
    restart; at the end everything sent is stored, each utterance once, with its markers once.

    (test_daemon_load.py kills once, after a fixed number of acks, and resends everything.)"""
    seed = int(os.environ.get("ATTUNE_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print("kill -9 test: seed %d (rerun with ATTUNE_FAULT_SEED=%d)" % (seed, seed))
    rng = random.Random(seed)
    cfg = dict(batch_ms=5, store_text="full")
    db = tmp_path / "attune.db"
    s = Stream("c-kill")
    chunk = 60000         # lines handed to the socket per cycle, at most
    acked_to = 0          # lines [0, acked_to) are acknowledged
    sent_to = 0           # lines [0, sent_to) were written to a socket at least once
    t_start = time.monotonic()
    per_cycle = []
    for cycle in range(20):
        d = attuned(db=db, **cfg)
        # The restarted daemon has everything acknowledged before the kill, once; what it has
        # beyond that was committed but its ack was lost with the process.
        stored = assert_exactly_once(db, s.keys(0, acked_to), s.keys(0, sent_to))
        unacked_stored = len(stored) - acked_to
        # The kill lost the writer's memory of the conversations whose metrics it had deferred
        # (utterance-only updates, at most once a second); the database kept it, and the
        # restarted writer recomputes them before anything else.
        wait_for("metrics recomputed at restart %d" % cycle, lambda: not stale_metrics(db), 15)
        c = d.connect()
        blob = s.encoded(acked_to, acked_to + chunk)
        pump = Pump(c, blob, chunk)
        kill_at = time.monotonic() + rng.uniform(0.02, 0.5)
        while time.monotonic() < kill_at and c.acked < chunk:
            pump.step(wait=0.002)
        d.kill9()
        # Acks the daemon wrote before it died are still in our socket buffer.
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                pump.step(wait=0.05)
            raise AssertionError("the connection of a killed daemon did not close")
        except Closed:
            pass
        c.close()
        written = blob.count(b"\n", 0, pump.off)
        per_cycle.append((c.acked, written, unacked_stored))
        sent_to = max(sent_to, acked_to + written)
        acked_to += c.acked
        assert c.errors() == [], "seed %d: %s" % (seed, c.errors()[:3])

    # The last restart: the client sends everything not yet acknowledged, and all of it is.
    d = attuned(db=db, **cfg)
    assert_exactly_once(db, s.keys(0, acked_to), s.keys(0, sent_to))
    c = d.connect()
    pump = Pump(c, s.encoded(acked_to, sent_to), sent_to - acked_to)
    pump_until(pump, lambda: c.acked == sent_to - acked_to, 120, "the final resend acked")
    assert c.errors() == []
    elapsed = time.monotonic() - t_start
    print("kill -9 test: %d lines sent, %d acked before the final resend, %.1f s; per cycle "
          "(acked, lines written, committed but unacked at the previous kill): %s"
          % (sent_to, acked_to, elapsed, per_cycle))
    assert sum(1 for acked, written, _ in per_cycle if written > acked) >= 10, (
        "seed %d: most kills should find lines in flight: %s" % (seed, per_cycle))
    assert acked_to > 0, "seed %d: nothing was acknowledged before the final run" % seed

    stored = assert_exactly_once(db, s.keys(0, sent_to), s.keys(0, sent_to))
    assert len(stored) == sent_to
    # Idle, every conversation's metrics are those of its stored turns: also those of
    # conversations that got no turn since a kill interrupted their deferred recomputation.
    wait_for("metrics caught up once idle", lambda: not stale_metrics(db), 15)
    assert d.rows("SELECT COUNT(*) FROM pending_metrics") == [(0,)]
    counts = marker_counts()
    assert d.rows("SELECT COUNT(*) FROM markers") == [
        (sum(counts[s.text_index(i)] for i in range(sent_to)),)]
    n_convs = len({cid for cid, _ in stored})
    assert d.rows("SELECT COUNT(*) FROM conversations") == [(n_convs,)]


def test_kill9_within_the_metrics_throttle_window_then_metrics_catch_up_at_restart(
        attuned, tmp_path):
    """Utterance-only updates recompute a conversation's metrics at most once a second. The
    conversations whose recomputation is deferred are recorded in the database with the
    utterances that made their metrics stale, so a kill -9 inside that second leaves them to
    the next start, which recomputes them at once, with no new message for them. The metrics
    then equal those of the same conversations sent whole (recomputed at once)."""
    cfg = dict(batch_ms=5, store_text="full")
    n_conv, n_turns = 50, 12

    def turn(k, seq):
        return {"speaker": "customer" if seq % 2 == 0 else "agent",
                "text": TEXTS[(k + seq) % len(TEXTS)]}

    d = attuned(**cfg)
    c = d.connect()
    # Turn 0: a conversation the writer has not seen is recomputed at once ...
    c.send(*[utt("c-thr-%d" % k, 0, **turn(k, 0)) for k in range(n_conv)])
    c.wait_ack()
    # ... and its next turns, acknowledged within the second, are deferred.
    c.send(*[utt("c-thr-%d" % k, seq, **turn(k, seq))
             for seq in range(1, n_turns) for k in range(n_conv)])
    c.wait_ack()
    d.kill9()
    c.close()
    assert stale_metrics(d.db), "the kill did not come within the throttle window"

    ref = attuned(db=tmp_path / "ref.db", **cfg)
    r = ref.connect()
    r.send(*[{"type": "conversation", "conversation_id": "c-thr-%d" % k,
              "turns": [turn(k, seq) for seq in range(n_turns)]} for k in range(n_conv)])
    r.wait_ack()
    cols = [col for col in METRIC_COLUMNS if col != "ended"]  # a whole conversation has ended
    select = "SELECT conversation_id, %s FROM conversations ORDER BY 1" % ", ".join(cols)
    want = ref.rows(select)
    assert len(want) == n_conv and all(row[1] == n_turns for row in want)

    d = attuned(db=d.db, **cfg)
    wait_for("metrics recomputed at restart", lambda: not stale_metrics(d.db), 15)
    assert d.rows(select) == want
    assert d.rows("SELECT COUNT(*) FROM pending_metrics") == [(0,)]
    assert_exactly_once(d.db, {("c-thr-%d" % k, seq) for k in range(n_conv)
                               for seq in range(n_turns)})


def foreign_key_problems(db):
    """PRAGMA foreign_key_check over the whole file: the rows whose parent is missing."""
    con = sqlite3.connect(str(db), timeout=10)
    try:
        return con.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        con.close()


def test_no_dangling_reference_after_resends_outcomes_and_kill9_and_cascades_still_work(
        attuned, tmp_path):
    """attuned's own connection does not enforce foreign keys (schema/README.md): it stores a
    conversation's row before its utterances, an utterance before its markers, and marks
    deferred metrics only for conversations it stored. Through every message type, resends,
    outcomes before and after the end, utterances numbered by the daemon, a kill -9 inside the
    metrics throttle window and a restart, PRAGMA foreign_key_check stays empty; and the
    schema still declares the keys, so an analyst who turns them on gets the cascades."""
    cfg = dict(batch_ms=5, store_text="full")
    d = attuned(**cfg)
    c = d.connect()
    lines = []
    for k in range(30):
        cid = "c-fk-%d" % k
        if k % 3 == 0:
            lines.append({"type": "start", "conversation_id": cid, "channel": "chat",
                          "queue": "billing", "agent_id": "a-%d" % (k % 4)})
        if k % 5 == 0:
            lines.append({"type": "outcome", "conversation_id": cid, "csat": 4})
        lines += [utt(cid, seq, speaker="customer" if seq % 2 == 0 else "agent",
                      text=TEXTS[(k + seq) % len(TEXTS)]) for seq in range(6)]
        if k % 2 == 0:
            lines.append({"type": "end", "conversation_id": cid, "resolved": True})
        if k % 4 == 1:
            lines.append({"type": "outcome", "conversation_id": cid, "escalated": True})
    lines.append({"type": "conversation", "conversation_id": "c-fk-whole",
                  "turns": [{"speaker": "customer", "text": TEXTS[1]},
                            {"speaker": "agent", "text": TEXTS[0]}]})
    c.send(*lines)
    assert c.wait_ack() == []
    # Daemon-numbered utterances (no seq), then everything again: a resend stores nothing twice.
    c.send(*[utt("c-fk-%d" % k, text=TEXTS[k % len(TEXTS)]) for k in range(0, 30, 7)])
    c.send(*lines)
    assert c.wait_ack() == []
    assert foreign_key_problems(d.db) == []
    # Utterances for conversations recomputed a moment ago are deferred (pending_metrics), and
    # the kill comes before their recomputation.
    c.send(*[utt("c-fk-%d" % k, 6 + j, text=TEXTS[j]) for j in range(3) for k in range(30)])
    assert c.wait_ack() == []
    d.kill9()
    c.close()
    assert query(d.db, "SELECT COUNT(*) FROM pending_metrics")[0][0] > 0, (
        "the kill did not come within the throttle window")
    assert foreign_key_problems(d.db) == []

    d = attuned(db=d.db, **cfg)
    wait_for("metrics recomputed at restart", lambda: not stale_metrics(d.db), 15)
    c = d.connect()
    c.send(*lines[len(lines) // 2:])
    c.send(utt("c-fk-new", 0, text=TEXTS[0]), {"type": "end", "conversation_id": "c-fk-new"})
    assert c.wait_ack() == []
    assert d.stop() == 0
    assert foreign_key_problems(d.db) == []
    assert query(d.db, "SELECT COUNT(*) FROM markers")[0][0] > 0

    # The keys are still declared: with foreign keys on, deleting conversations cascades to
    # their utterances, their markers and their pending_metrics mark.
    con = sqlite3.connect(str(d.db), timeout=10)
    try:
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("INSERT INTO pending_metrics (conversation_id, deferred_at) "
                    "VALUES ('c-fk-3', 0)")
        con.execute("DELETE FROM conversations WHERE conversation_id IN ('c-fk-3', 'c-fk-4')")
        con.commit()
        for table in ("utterances", "markers", "pending_metrics"):
            assert con.execute("SELECT COUNT(*) FROM %s WHERE conversation_id IN "
                               "('c-fk-3', 'c-fk-4')" % table).fetchone() == (0,), table
        assert con.execute("SELECT COUNT(*) FROM utterances").fetchone()[0] > 0
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        con.close()


# ---- a full store ----------------------------------------------------------------------------

def fill_until_acks_stop(d, c, pump, what):
    """Streams until the writer reports a failed commit, then until acks stop."""
    pump_until(pump, lambda: "store full" in d.log() or "not committed" in d.log(), 60,
               "%s: the writer reports a full store" % what)
    pump_until_acks_stop(pump, quiet_s=2.0, timeout=60)


def test_max_db_mb_stops_acks_keeps_running_and_resumes_when_raised(attuned):
    """At max_db_mb the batch is rolled back and retried: nothing more is acknowledged, the
    daemon keeps running with its in-flight lines and memory bounded, and says so (log,
    metrics, /healthz). Raised with a reload, every line is stored and acknowledged, once."""
    queue_lines = 256
    d = attuned(queue_lines=queue_lines, batch_rows=64, batch_ms=5, store_text="full",
                **{"store.max_db_mb": 2, "metrics.listen": "127.0.0.1:0"})
    port = metrics_port(d)
    wait_for("the cap applied", lambda: "database size cap 2 MiB" in d.log(), 20)
    m = scrape(port)
    assert m["attuned_db_max_bytes"] == 2 * 1048576 and m["attuned_store_full"] == 0
    c = d.connect()
    s = Stream("c-full", pad="p" * 400)
    c.send_raw(s.encoded(0, 100))
    c.wait_ack()
    base_kb = d.rss_kb()
    n = 60000  # ~33 MB on the wire, ~10 MB stored: far beyond the cap and the socket buffers
    pump = Pump(c, s.encoded(100, 100 + n), n)
    fill_until_acks_stop(d, c, pump, "max_db_mb = 2")

    assert d.running()
    acked = c.acked
    assert 100 < acked < 100 + n
    assert not pump.sent_all, "the daemon kept reading while its store was full"
    # The failed batch was rolled back: what is stored is exactly what was acknowledged.
    assert assert_exactly_once(d.db, s.keys(0, acked)) == s.keys(0, acked)
    m = scrape(port)
    assert m["attuned_store_full"] == 1
    assert m["attuned_commit_failures_total"] >= 1
    assert 0 < m["attuned_inflight_lines"] <= queue_lines
    assert m["attuned_db_bytes"] <= 2 * 1048576
    status, body = http_get(port, "/healthz")
    assert status == 503 and "store is full" in body, (status, body)
    if not under_asan():
        grown_mb = (d.rss_kb() - base_kb) / 1024
        assert grown_mb < 24, "RSS grew by %.1f MB while the store was full" % grown_mb
    warn = [l for l in d.log().splitlines() if "store full" in l]
    assert len(warn) == 1 and " warn writer: " in warn[0], warn  # once, not at every retry
    assert "max_db_mb is 2" in warn[0] and "database or disk is full" in warn[0], warn
    assert not any(t in d.log() for t in TEXTS)  # never the transcript

    # Raise the cap in the file and reload: everything waiting is stored and acknowledged.
    d.config["store.max_db_mb"] = 64
    d._write_ini(d.workdir / "attuned-0.ini")  # the file this (first) daemon was started with
    d.proc.send_signal(signal.SIGHUP)
    pump_until(pump, lambda: c.acked == 100 + n, 120, "everything acked after the raise")
    assert c.errors() == []
    assert "database size cap 64 MiB" in d.log() and "has room again" in d.log()
    assert assert_exactly_once(d.db, s.keys(0, 100 + n)) == s.keys(0, 100 + n)
    # Once idle, every conversation's metrics are those of its turns, whatever the rolled-back
    # attempts did to the writer's list of deferred conversations.
    wait_for("metrics caught up once idle", lambda: not stale_metrics(d.db), 15)
    m = scrape(port)
    assert m["attuned_store_full"] == 0 and m["attuned_db_max_bytes"] == 64 * 1048576
    assert m["attuned_inflight_lines"] == 0
    assert http_get(port, "/healthz") == (200, "ok\n")


def test_sigterm_while_the_store_is_full_gives_up_after_drain_timeout_ms(attuned):
    """SIGTERM while the store is full: the drain cannot finish, so once [server]
    drain_timeout_ms has passed the daemon gives up the lines it could not store, without
    acknowledging them, logs how many (an error, without transcript text), closes the
    connections and exits 3, long before systemd's TimeoutStopSec would SIGKILL it. Everything
    acknowledged is stored once and the database is consistent: restarted with room, the daemon
    stores what the client sends again, and the deferred metrics catch up."""
    drain_s = 2.0
    d = attuned(queue_lines=256, batch_rows=64, batch_ms=5, store_text="full",
                drain_timeout_ms=int(drain_s * 1000), **{"store.max_db_mb": 2})
    c = d.connect()
    s = Stream("c-term", pad="p" * 400)
    c.send_raw(s.encoded(0, 100))
    c.wait_ack()
    n = 60000
    pump = Pump(c, s.encoded(100, 100 + n), n)
    fill_until_acks_stop(d, c, pump, "max_db_mb = 2")
    acked = c.acked
    assert 100 < acked < 100 + n

    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    try:
        while True:
            pump.step(wait=0.05)
            assert time.monotonic() - t0 < drain_s + 10, "the connection was not closed"
    except Closed:
        pass
    rc = d.wait(timeout=drain_s + 10)
    elapsed = time.monotonic() - t0
    assert rc == 3, d.log()[-3000:]
    assert drain_s - 0.1 <= elapsed < drain_s + 5, "exited %.1f s after SIGTERM" % elapsed
    log = d.log()
    assert "drain_timeout_ms (2000 ms) passed" in log and "(the store is full)" in log, log[-3000:]
    m = re.search(r" error main: stopping with (\d+) lines not stored", log)
    assert m and int(m.group(1)) > 0, log[-3000:]
    assert "drained: everything received is stored" not in log
    assert not any(t in log for t in TEXTS)  # never the transcript
    # Nothing given up was acknowledged; what was acknowledged is stored, once.
    assert c.acked == acked
    assert [e for e in c.errors() if e["code"] != "shutting_down"] == []
    assert assert_exactly_once(d.db, s.keys(0, acked)) == s.keys(0, acked)

    d = attuned(db=d.db, batch_ms=5, store_text="full", **{"store.max_db_mb": 64})
    c = d.connect()
    pump = Pump(c, s.encoded(acked, 100 + n), 100 + n - acked)
    pump_until(pump, lambda: c.acked == 100 + n - acked, 120, "the resend acked")
    assert c.errors() == []
    assert assert_exactly_once(d.db, s.keys(0, 100 + n)) == s.keys(0, 100 + n)
    wait_for("metrics caught up once idle", lambda: not stale_metrics(d.db), 15)


def test_a_bad_max_db_mb_is_refused_with_file_line_and_key(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[store]\nbatch_ms = 5\nmax_db_mb = -3\n")
    p = subprocess.run([str(ATTUNED), "-c", str(ini), "--check-config"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2
    assert "%s:3: [store] max_db_mb: out of range" % ini in p.stderr, p.stderr
    assert "0..4194304 MiB" in p.stderr


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 MiB tmpfs, or a skip when this process may not mount one (not root, a container
    without the capability)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % p.stderr.strip())
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)])


def test_a_full_filesystem_stops_acks_and_freeing_space_resumes(attuned, small_tmpfs):
    """The real thing: the database's filesystem fills up. Like max_db_mb, nothing more is
    acknowledged and the daemon keeps running; once space is freed, everything is stored."""
    db = small_tmpfs / "attune.db"
    d = attuned(db=db, queue_lines=256, batch_rows=64, batch_ms=5, store_text="full")
    c = d.connect()
    s = Stream("c-disk")
    c.send_raw(s.encoded(0, 100))
    c.wait_ack()
    # Leave about 2 MiB free.
    free = os.statvfs(str(small_tmpfs))
    filler = small_tmpfs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free.f_bavail * free.f_frsize - 2 * 1048576))
    n = 40000
    pump = Pump(c, s.encoded(100, 100 + n), n)
    fill_until_acks_stop(d, c, pump, "a full tmpfs")
    assert d.running()
    acked = c.acked
    assert acked < 100 + n
    assert assert_exactly_once(db, s.keys(0, acked)) == s.keys(0, acked)

    filler.unlink()
    pump_until(pump, lambda: c.acked == 100 + n, 120, "everything acked once space is free")
    assert c.errors() == []
    assert assert_exactly_once(db, s.keys(0, 100 + n)) == s.keys(0, 100 + n)
    # A commit that fails for want of disk space (writing the WAL) has recomputed deferred
    # metrics before it was rolled back; once idle they are recomputed all the same.
    wait_for("metrics caught up once idle", lambda: not stale_metrics(db), 15)
    # Stopped here, before the fixture's teardown, so that the tmpfs can be unmounted.
    assert d.stop() == 0, d.log()[-3000:]
    integrity_ok(db)


# ---- analysts --------------------------------------------------------------------------------

def test_a_long_read_transaction_does_not_stop_ingest_and_the_wal_is_checkpointed_after(
        attuned):
    """An analyst's read transaction held open through heavy ingest: acks keep coming and the
    analyst keeps a consistent snapshot, while the WAL grows (it cannot be checkpointed past
    the snapshot). After the analyst leaves, the WAL is checkpointed and cut back under
    continued ingest (journal_size_limit), and truncated to nothing once the daemon is idle."""
    # Small batches touching many pages each (1,000 conversations interleaved): the WAL grows
    # fast, past journal_size_limit while the reader holds it.
    d = attuned(batch_ms=5, batch_rows=2048, store_text="full")
    c = d.connect()
    s = Stream("c-read", W=1000)
    c.send_raw(s.encoded(0, 1000))
    c.wait_ack()
    wait_for("the idle daemon truncates its WAL", lambda: wal_size(d.db) == 0, 20)

    analyst = sqlite3.connect("file:%s?mode=ro" % d.db, uri=True, isolation_level=None,
                              timeout=10)
    try:
        analyst.execute("BEGIN")
        assert analyst.execute("SELECT COUNT(*) FROM utterances").fetchone() == (1000,)
        n1 = 70000
        pump = Pump(c, s.encoded(1000, 1000 + n1), n1)
        t0 = time.monotonic()
        pump_until(pump, lambda: c.acked == 1000 + n1, 120, "ingest while a reader holds on")
        print("%d lines acked in %.1f s with a reader holding a snapshot" % (
            n1, time.monotonic() - t0))
        peak = wal_size(d.db)
        assert peak > 40 << 20, "the WAL did not grow under the reader (%d bytes)" % peak
        header = wal_header(d.db)
        # Idle with the reader still there (the daemon recomputes the metrics of the last
        # conversations, then tries to checkpoint every second): the WAL only grows, and is
        # neither restarted nor truncated.
        t0 = since = time.monotonic()
        while time.monotonic() - since < 3:
            assert time.monotonic() - t0 < 30, "the WAL kept changing while idle"
            time.sleep(0.1)
            size = wal_size(d.db)
            assert size >= peak, "the WAL shrank under the reader"
            if size != peak:
                peak, since = size, time.monotonic()
        assert wal_header(d.db) == header
        assert analyst.execute("SELECT COUNT(*) FROM utterances").fetchone() == (1000,)
        analyst.execute("COMMIT")
    finally:
        analyst.close()

    # The reader left; under continued ingest the WAL is checkpointed, restarts from its start
    # and is cut back to journal_size_limit (32 MiB).
    n2 = 20000
    total = 1000 + n1 + n2
    for start in range(1000 + n1, total, 2000):
        c.send_raw(s.encoded(start, start + 2000))
        c.wait_ack(timeout=60)
    after = wal_size(d.db)
    assert after <= 32 << 20, "the WAL was not cut back after the reader left (%d bytes)" % after
    assert after == 0 or wal_header(d.db) != header, "the WAL never restarted"

    wait_for("the idle daemon truncates its WAL", lambda: wal_size(d.db) == 0, 20)
    stored = assert_exactly_once(d.db, s.keys(0, total), s.keys(0, total))
    assert len(stored) == total
    with sqlite3.connect("file:%s?mode=ro" % d.db, uri=True) as fresh:
        assert fresh.execute("SELECT COUNT(*) FROM utterances").fetchone() == (total,)


def test_an_analyst_holding_the_write_lock_beyond_the_busy_timeout(attuned):
    """An analyst's write transaction holds the lock for longer than the writer's busy timeout
    (5 s) under pipelined load: the writer's transactions fail with SQLITE_BUSY and are retried,
    nothing is acknowledged meanwhile, and once the lock is released everything is stored, once.
    (test_daemon_delivery.py holds it for less than the busy timeout.)"""
    d = attuned(batch_ms=5, queue_lines=512, store_text="full")
    c = d.connect()
    s = Stream("c-lock")
    c.send_raw(s.encoded(0, 100))
    c.wait_ack()
    lock = sqlite3.connect(str(d.db), timeout=10, isolation_level=None)
    n = 20000
    try:
        lock.execute("BEGIN IMMEDIATE")
        pump = Pump(c, s.encoded(100, 100 + n), n)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6.5:
            pump.step()
        assert c.acked == 100, "acknowledged while the analyst held the write lock"
        pump_until(pump, lambda: "not committed" in d.log(), 30, "a failed attempt logged")
        assert "database is locked" in d.log()
        assert d.rows("SELECT COUNT(*) FROM utterances") == [(100,)]
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    pump_until(pump, lambda: c.acked == 100 + n, 120, "everything acked after the release")
    assert c.errors() == []
    stored = assert_exactly_once(d.db, s.keys(0, 100 + n), s.keys(0, 100 + n))
    assert len(stored) == 100 + n

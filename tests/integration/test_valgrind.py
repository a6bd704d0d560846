"""attuned under valgrind memcheck: a realistic session, then SIGTERM with clients still
connected, must end with exit status 0, no memory error, no definite or indirect leak and no
file descriptor left open by the daemon (the quality bar's "Valgrind-clean daemon shutdown").

The session touches what a day of service does: hello with an auth token, live conversations
(start, utterances that raise every alert kind, outcome, end), a whole `conversation`, a
duplicate, one line of each error code a client can cause cheaply (`internal` through a
trigger that refuses one utterance), a connection refused as `overloaded`, two unauthorized
ones, alert subscribers, a client that hangs up with lines in flight, metrics scrapes, a
SIGHUP that rotates the log, changes reloadable keys and swaps in a new model, a `rescore`
with that model, and a SIGTERM while a subscriber, a half-sent line, a keep-alive metrics
connection and a client with unacknowledged lines are still there.

Valgrind options. `--undef-value-errors=no` is needed because of PCRE2's JIT: its compiled
matchers read past the end of the subject with aligned 16-byte SIMD loads (up to 15 bytes past
it; an aligned load cannot cross into another page, which is what PCRE2 relies on). memcheck
lets such partial loads through (`--partial-loads-ok`, on by default) but marks the bytes past
the end of the block undefined, and reports the compares on them as "Conditional jump or move
depends on uninitialised value(s)" with every frame `???`: JIT code is generated at run time
and has no symbols. Debian's libpcre2 is not built with PCRE2's valgrind support, which would
avoid this. To see it: `ATTUNE_LEXICONS=lexicons valgrind --track-origins=yes build/attune
score FILE` (the origin is the subject's heap block; with `--partial-loads-ok=no` the loads
themselves show as "Invalid read of size 16" starting a few bytes before the end of the
block). The session below gets about ten such reports without the option, all in JIT code, in
the scoring threads. The option turns off every uninitialised-value check, not only these;
invalid reads and writes, bad frees, overlapping copies and leaks are still errors.

Leaks of kinds "definite" and "indirect" fail the test; "possibly lost" and "still reachable"
blocks do not. `--track-fds=yes` lists the descriptors open at exit: every one the daemon
opened itself must be closed (those inherited from the test, valgrind's log among them, are
not its business).

Valgrind makes the daemon 20-50 times slower (the model, about 750 PCRE2 patterns, takes
seconds to build), so every wait here is generous and polls instead of sleeping. The test is
skipped when valgrind is not installed (packaging/deps.sh installs it for `make test`) and when
the daemon is built with a sanitizer (`make asan`, `make tsan`), which cannot run under it.
"""
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time

import pytest

from conftest import Client, integrity_ok, query

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("ATTUNE_BUILD", REPO / "build"))
ATTUNED = BUILD / "attuned"

VALGRIND = shutil.which("valgrind")
# The exit status valgrind substitutes when it found an error: none of attuned's own (0-3).
VALGRIND_ERROR_EXIT = 99
TOKEN = "vg-s3cret"
# Every wait on the daemon: under valgrind a start or a model rebuild takes seconds, more when
# the machine is busy.
SLOW = 120

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
METRICS_ON = re.compile(r"metrics on 127\.0\.0\.1:(\d+)")
NEW_RULE = "fru-test-vg-glorbish\tmatch\tescalation_request\t*\t\\bglorbish\\b\n"


def valgrind_or_skip():
    if not VALGRIND:
        pytest.skip("valgrind not found: install it (apt-get install valgrind; packaging/deps.sh "
                    "does so when make test runs)")
    if not ATTUNED.exists():
        pytest.fail("build the daemon first (make all): %s" % ATTUNED)
    binary = ATTUNED.read_bytes()
    for runtime in (b"__asan_init", b"__tsan_init", b"__msan_init"):
        if runtime in binary:
            pytest.skip("%s is built with a sanitizer (%s), which cannot run under valgrind"
                        % (ATTUNED, runtime.decode()))


class VgDaemon:
    """build/attuned under valgrind memcheck, configured by an INI file that the test may
    rewrite before a SIGHUP."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.db = tmp / "attune.db"
        self.ini = tmp / "attuned.ini"
        self.log_path = tmp / "attuned.log"
        self.vg_log = tmp / "valgrind.log"
        self.out_path = tmp / "stdout-stderr.log"
        self.proc = None

    def write_ini(self, sections):
        with open(self.ini, "w") as f:
            for section, keys in sections.items():
                f.write("[%s]\n" % section)
                for key, value in keys.items():
                    f.write("%s = %s\n" % (key, value))
                f.write("\n")

    def start(self):
        args = [VALGRIND, "--tool=memcheck", "--leak-check=full",
                "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
                "--error-exitcode=%d" % VALGRIND_ERROR_EXIT,
                # PCRE2's JIT: see the module docstring.
                "--undef-value-errors=no",
                "--track-fds=yes", "--num-callers=30", "--log-file=%s" % self.vg_log,
                str(ATTUNED), "-c", str(self.ini), "--listen", "127.0.0.1:0",
                "--db", str(self.db), "--metrics-listen", "127.0.0.1:0"]
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, cwd=str(self.tmp))
        self.port = int(self.wait_log(LISTENING, "start").group(1))
        self.metrics_port = int(self.wait_log(METRICS_ON, "start").group(1))

    def log(self):
        """The daemon's log: rotated files first, then the current one, then stdout/stderr."""
        text = ""
        for p in sorted(self.tmp.glob("attuned.log.*")) + [self.log_path, self.out_path]:
            try:
                text += p.read_text(errors="replace")
            except FileNotFoundError:
                pass
        return text

    def valgrind_log(self):
        try:
            return self.vg_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, what, timeout=SLOW, count=1):
        """Polls the log until `pattern` matched `count` times; returns the last match."""
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.log()))
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError("attuned exited with %d waiting for %s:\n%s\n%s" % (
                    self.proc.returncode, what, self.log()[-4000:], self.valgrind_log()[-4000:]))
            if time.monotonic() > deadline:
                raise AssertionError("no %r in the log within %ss (%s):\n%s"
                                     % (pattern, timeout, what, self.log()[-4000:]))
            time.sleep(0.05)

    def wait(self, timeout=SLOW):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("attuned did not exit within %ss:\n%s"
                                 % (timeout, self.log()[-4000:])) from None
        self._out.close()
        return rc

    def connect(self, hello=True, **kw):
        c = Client(self.port, timeout=SLOW)
        if hello:
            c.send(dict({"type": "hello", "token": TOKEN, "client": "vg-test/1"}, **kw))
            assert c.recv(SLOW)["type"] == "welcome"
        return c

    def rows(self, sql, params=()):
        return query(self.db, sql, params)


@pytest.fixture
def vg(tmp_path):
    valgrind_or_skip()
    d = VgDaemon(tmp_path)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def utt(cid, seq, speaker, text, **kw):
    m = {"type": "utterance", "conversation_id": cid, "speaker": speaker, "text": text}
    if seq is not None:
        m["seq"] = seq
    m.update(kw)
    return m


def http_request(port, method, path, conn=None):
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=SLOW)
    conn.request(method, path)
    r = conn.getresponse()
    return r.status, r.read().decode()


def wait_until(what, predicate, timeout=SLOW):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within %ss: %s" % (timeout, what)
        time.sleep(0.05)


def alerts_until(sub, kinds, timeout=SLOW):
    """Reads from a subscriber until every kind of `kinds` has arrived; returns the alerts."""
    got = []
    deadline = time.monotonic() + timeout
    while not kinds <= {a["kind"] for a in got}:
        left = deadline - time.monotonic()
        assert left > 0, "alerts %s missing; got %s" % (kinds - {a["kind"] for a in got}, got)
        m = sub.recv(left)
        if m["type"] == "alert":
            got.append(m)
    return got


def open_fds_at_exit(vg_log):
    """The descriptors valgrind lists as open at exit that the daemon opened itself (those
    "<inherited from parent>" were open before it started: the standard streams, valgrind's
    own log)."""
    blocks = re.split(r"^==\d+== Open (?:file descriptor|AF_\w+ socket) ", vg_log, flags=re.M)
    blocks = [re.split(r"^==\d+== *$", b, maxsplit=1, flags=re.M)[0] for b in blocks[1:]]
    return [b.strip() for b in blocks if "<inherited from parent>" not in b]


@pytest.mark.slow
def test_valgrind_clean_session_and_shutdown(vg, tmp_path):
    lexicons = tmp_path / "lexicons"
    shutil.copytree(REPO / "lexicons", lexicons)
    config = {
        "server": {"auth_token": TOKEN, "max_connections": 3, "max_line_bytes": 1024},
        "store": {"batch_ms": 10},
        "scoring": {"lexicons": lexicons, "workers": 2},
        "log": {"level": "info", "file": vg.log_path},
        "alerts": {"compound_floor": -0.3, "consecutive_turns": 2},
    }
    vg.write_ini(config)
    vg.start()

    # ---- three connections, the limit: a fourth is refused ---------------------------------
    sub = vg.connect()
    sub.send({"type": "subscribe", "events": ["alert"], "filter": {"queue": "tech"}},
             {"type": "subscribe", "events": ["alert"]})     # replaces the filter
    c = vg.connect()
    nack = vg.connect(acks="none")
    over = Client(vg.port, timeout=SLOW)
    got = over.expect_closed(SLOW)
    assert [m.get("code") for m in got] == ["overloaded"], got
    over.close()

    # ---- live conversations and a whole one ----------------------------------------------
    c.send(
        {"type": "start", "conversation_id": "vg-1", "channel": "chat", "queue": "billing",
         "agent_id": "a-1", "customer_id": "u-1", "started_at": "2026-11-25T10:00:00Z"},
        utt("vg-1", 0, "customer", "This is the THIRD time I've been charged twice!! I want to "
            "cancel my account.", ts="2026-11-25T10:00:04Z"),
        utt("vg-1", 1, "agent", "Calm down, it's not a big deal.", ts="2026-11-25T10:00:31Z"),
        utt("vg-1", 2, "customer", "This is awful and horrible. Let me speak to a manager now.",
            ts=1795600840000, id="u-2"),
        utt("vg-1", 3, "agent", "I'm so sorry, that must be really frustrating. Let me fix this "
            "for you right now.", ts="2026-11-25T11:01:10+01:00"),
        utt("vg-1", 4, "customer", "My card is 4111 1111 1111 1111 and my email jo@example.com,"
            " call me on +44 20 7946 0958"),
        {"type": "outcome", "conversation_id": "vg-1", "csat": 4, "nps": 7},
        {"type": "end", "conversation_id": "vg-1", "ended_at": "2026-11-25T10:06:10Z",
         "resolved": True, "escalated": False},
        {"type": "conversation", "conversation_id": "vg-2", "channel": "voice",
         "queue": "tech", "agent_id": "a-2", "customer_id": "u-2",
         "started_at": "2026-11-25T11:00:00Z",
         "outcome": {"resolved": False, "csat": 1, "transferred": True},
         "turns": [
             {"speaker": "customer", "start_ms": 0, "end_ms": 4000,
              "text": "You idiot, my lawyer will sue you for this!"},
             {"speaker": "agent", "start_ms": 3500, "end_ms": 9000,
              "text": "That's our policy, there's nothing I can do."},
             {"speaker": "bot", "start_ms": 15000, "end_ms": 16000,
              "text": "Please rate this call."},
             {"speaker": "system", "text": "call transferred"},
         ]},
        utt("vg-3", None, "customer", "hello, is anyone there?"),      # numbered by the server
        utt("vg-3", None, "agent", "Yes, thank you for waiting."),
        {"type": "ping"},
    )
    others = c.wait_ack(timeout=SLOW)
    assert [m["type"] for m in others] == ["pong"], others
    # The same utterance again (a client resending after a reconnect): stored once.
    c.send(utt("vg-1", 0, "customer", "This is the THIRD time I've been charged twice!! I want "
               "to cancel my account.", ts="2026-11-25T10:00:04Z"))
    c.wait_ack(timeout=SLOW)
    got = alerts_until(sub, {"churn_threat", "dismissive_agent", "escalation_request",
                             "frustration_spike", "legal_threat", "abuse"})
    assert all("charged" not in a["detail"] for a in got)

    # A client without acks hangs up with its lines in flight: they are stored all the same.
    nack.send(utt("vg-4", 0, "customer", "quick question about my bill"),
              utt("vg-4", 1, "agent", "Sure, happy to help."))
    nack.close()
    wait_until("vg-4 stored", lambda: vg.rows(
        "SELECT COUNT(*) FROM utterances WHERE conversation_id = 'vg-4'") == [(2,)])

    # ---- one line of each error code a client can cause ----------------------------------
    first = c.lines + 1
    c.send_raw(b"{nope\n"                                               # invalid_json
               b'{"type":"ping","x":"caf\xe9"}\n'                       # invalid_utf8
               b"[1,2]\n"                                               # not_object
               b'{"type":"utterance","conversation_id":"vg-x","text":"hi","id":"m"}\n'
               b'{"type":"outcome","conversation_id":"vg-1","csat":9,"id":7}\n'
               b'{"type":"gossip","id":"g"}\n'                          # unknown_type
               b'{"type":"utterance","conversation_id":"vg-x","speaker":"agent",'
               b'"text":"a\\u0000b"}\n'                                 # bad_field (NUL)
               b'{"type":"ping","n":1e400}\n'                           # bad_field (number)
               + json.dumps(utt("vg-x", 0, "agent", "x" * 1100)).encode() + b"\n"  # too long
               b"\r\n"                                                  # blank: invalid_json
               b'{"type":"rescore","since":"not a time"}\r\n'           # bad_field
               + json.dumps(utt("vg-3", 2, "customer", "still there")).encode() + b"\r\n")
    c.wait_ack(timeout=SLOW)
    errors = [(e["line"] - first, e["code"], e.get("id")) for e in c.errors()]
    assert errors == [(0, "invalid_json", None), (1, "invalid_utf8", None),
                      (2, "not_object", None), (3, "missing_field", "m"),
                      (4, "bad_field", 7), (5, "unknown_type", "g"), (6, "bad_field", None),
                      (7, "bad_field", None), (8, "line_too_long", None),
                      (9, "invalid_json", None), (10, "bad_field", None)], c.errors()

    # A line whose parsed value (77 KB of jansson values) outgrows the loop thread's parse
    # arena (wire.c), twice: the second overwrites the arena, so that any value of the first
    # left unreleased is lost, not merely still pointed to.
    for _ in range(2):
        c.send({"type": "ping", "x": [{}] * 330})
        c.recv_type("pong", SLOW)

    # internal: a trigger (as an analyst might add) refuses one utterance; the rest of its
    # batch is stored and that line alone is answered.
    con = sqlite3.connect(str(vg.db), timeout=30)
    con.execute("CREATE TRIGGER vg_refuse BEFORE INSERT ON utterances "
                "WHEN NEW.conversation_id = 'vg-refused' "
                "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END")
    con.commit()
    n = c.send(utt("vg-3", 3, "agent", "one moment"),
               utt("vg-refused", 0, "customer", "refuse me", id="r"),
               utt("vg-3", 4, "agent", "done"))
    c.wait_ack(timeout=SLOW)
    assert [(e["line"], e["code"]) for e in c.errors()[-1:]] == [(n - 1, "internal")]
    con.execute("DROP TRIGGER vg_refuse")
    con.commit()
    con.close()

    # ---- metrics ------------------------------------------------------------------------
    status, body = http_request(vg.metrics_port, "GET", "/metrics")
    assert status == 200 and 'attuned_lines_rejected_total{code="invalid_json"}' in body
    assert http_request(vg.metrics_port, "GET", "/healthz")[0] == 200
    assert http_request(vg.metrics_port, "HEAD", "/metrics")[0] == 200
    assert http_request(vg.metrics_port, "GET", "/nope")[0] == 404
    with socket.create_connection(("127.0.0.1", vg.metrics_port), timeout=SLOW) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        try:
            s.recv(4096)                # a 400, or the connection closed
        except ConnectionResetError:
            pass

    # ---- SIGHUP: log rotated, reloadable keys changed, a new model -------------------------
    with open(lexicons / "markers" / "frustration.tsv", "a") as f:
        f.write(NEW_RULE)
    config["server"]["max_connections"] = 16
    config["log"]["level"] = "debug"
    config["alerts"]["compound_floor"] = -0.5
    config["store"]["batch_ms"] = 5
    vg.write_ini(config)
    vg.log_path.rename(vg.log_path.with_name("attuned.log.1"))
    vg.proc.send_signal(signal.SIGHUP)
    vg.wait_log(r"configuration reloaded", "the reload")
    vg.wait_log(r"model m-\w+ replaces m-\w+", "the new model")

    c.send(utt("vg-3", 5, "customer", "The app is glorbish today."))
    c.wait_ack(timeout=SLOW)
    got = alerts_until(sub, {"escalation_request"})
    assert any(a["detail"].endswith("fru-test-vg-glorbish") for a in got), got

    # unauthorized: no hello first, then a wrong token (in the slots the reload added).
    for first_line in ({"type": "ping"}, {"type": "hello", "token": "wrong"}):
        bad = Client(vg.port, timeout=SLOW)
        bad.send(first_line, utt("vg-unauth", 0, "customer", "not stored"))
        got = bad.expect_closed(SLOW)
        assert [m.get("code") for m in got] == ["unauthorized"], got
        bad.close()

    # rescore, on a connection of its own: the utterances stored before the reload.
    r = vg.connect()
    r.send({"type": "rescore", "id": "rs"})
    done = r.recv_type("rescored", SLOW)
    assert done["id"] == "rs" and done["utterances"] > 0, done
    r.wait_ack(timeout=SLOW)
    r.close()

    # ---- SIGTERM with clients still there --------------------------------------------------
    held = vg.connect()
    held.send_raw(b'{"type":"utterance","conversation_id":"vg-half"')   # never ends
    keepalive = http.client.HTTPConnection("127.0.0.1", vg.metrics_port, timeout=SLOW)
    assert http_request(vg.metrics_port, "GET", "/healthz", keepalive)[0] == 200
    before_stop = c.acked
    last = c.send(
        {"type": "conversation", "conversation_id": "vg-last", "queue": "billing",
         "turns": [{"speaker": "customer", "text": "I want to cancel, this is a joke"},
                   {"speaker": "agent", "text": "I understand, let me sort it out."}]},
        utt("vg-3", 6, "agent", "anything else?"),
        {"type": "end", "conversation_id": "vg-3", "resolved": True})
    vg.proc.send_signal(signal.SIGTERM)
    c.expect_closed(SLOW)
    sub.expect_closed(SLOW)
    held.expect_closed(SLOW)
    rc = vg.wait()
    keepalive.close()
    vglog = vg.valgrind_log()
    assert rc != VALGRIND_ERROR_EXIT, "valgrind found errors:\n%s" % vglog[-12000:]
    assert rc == 0, "attuned exited with %d:\n%s\n%s" % (rc, vg.log()[-4000:], vglog[-4000:])
    assert re.search(r"ERROR SUMMARY: 0 errors", vglog), vglog[-12000:]
    assert not re.search(r"(definitely|indirectly) lost: [1-9]", vglog), vglog[-12000:]
    assert open_fds_at_exit(vglog) == [], "descriptors left open:\n%s" % vglog[-8000:]
    assert "drained: everything received is stored and acknowledged" in vg.log()

    # ---- what was acknowledged is stored, once, and nothing else --------------------------
    integrity_ok(vg.db)
    assert c.errors()[-1]["code"] == "internal"      # no error after it: the end was clean
    # The last three lines were sent just before the SIGTERM: each is stored if and only if
    # it was acknowledged (read before the signal: stored and acknowledged before the close).
    assert before_stop <= c.acked <= last
    has_last, has_6, has_end = (c.acked >= last - 2, c.acked >= last - 1, c.acked >= last)
    stored = {cid for (cid,) in vg.rows("SELECT conversation_id FROM conversations")}
    # vg-refused: its conversation row may exist (the start a turn implies), never the turn.
    assert stored - {"vg-refused"} == {"vg-1", "vg-2", "vg-3", "vg-4"} | (
        {"vg-last"} if has_last else set()), (stored, c.acked, last)
    counts = dict(vg.rows("SELECT conversation_id, COUNT(*) FROM utterances GROUP BY 1"))
    expect = {"vg-1": 5, "vg-2": 4, "vg-3": 7 if has_6 else 6, "vg-4": 2}
    if has_last:
        expect["vg-last"] = 2
    assert counts == expect, (counts, c.acked, last)
    assert vg.rows("SELECT ended FROM conversations WHERE conversation_id = 'vg-3'") == [
        (int(has_end),)]
    row = vg.rows("SELECT csat, nps, resolved, ended FROM conversations "
                  "WHERE conversation_id = 'vg-1'")
    assert row == [(4, 7, 1, 1)], row
    texts = [t for (t,) in vg.rows("SELECT text FROM utterances WHERE conversation_id = 'vg-1' "
                                   "AND seq = 4")]
    assert "4111" not in texts[0] and "[CARD]" in texts[0] and "[EMAIL]" in texts[0], texts

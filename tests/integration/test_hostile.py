"""attuned against hostile clients: slowloris, clients that never read, a 100 MB line, malformed
JSON of every kind, ten thousand connections at once, and a pattern built to backtrack
catastrophically. Each is answered as PROTOCOL.md says and counted in the metrics, and none of
them stalls the other clients or grows the daemon's memory past its bound.

A canary client pings throughout: its round trip is what "other clients are unaffected" means.

Numbers out of range: a number that fits a 64-bit integer or a double but not its field is
bad_field naming the field, and so is one past what the JSON parser holds (1e400, 2**64), in
any field, known or not (RFC 8259 section 6 lets an implementation limit the range of numbers).
A NUL character ("\u0000") in any string is bad_field naming where it is, too: no field may
hold one, as the daemon would cut it short.
"""
import http.client
import json
import re
import resource
import selectors
import shutil
import socket
import time

import pytest

from conftest import ATTUNED, REPO, Closed, utt

# Sanitizer builds (make asan, make tsan) run the daemon several times slower, and their RSS
# holds shadow memory and freed blocks in quarantine: there, time limits scale, fewer
# connections are opened at once, and memory bounds are left to the plain build.
_BINARY = ATTUNED.read_bytes() if ATTUNED.exists() else b""
SANITIZED = b"__asan_init" in _BINARY or b"__tsan_init" in _BINARY
SLOW = 8 if b"__tsan_init" in _BINARY else 3 if SANITIZED else 1


def assert_rss_grew_less(d, since_kb, limit_mb, now_kb=None):
    grew_mb = ((now_kb or d.rss_kb()) - since_kb) / 1024
    if not SANITIZED:
        assert grew_mb < limit_mb, "RSS grew by %.1f MB (bound %d MB)" % (grew_mb, limit_mb)
METRICS_ON = re.compile(r"metrics on 127\.0\.0\.1:(\d+)")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def with_metrics(attuned, **config):
    """A daemon with its metrics endpoint on an ephemeral port (d.metrics_port)."""
    d = attuned(**{"metrics.listen": "127.0.0.1:0"}, **config)
    m = METRICS_ON.search(d.log())
    assert m, d.log()
    d.metrics_port = int(m.group(1))
    return d


def scrape(d):
    """{"name" or "name{labels}": value} of the daemon's /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", d.metrics_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        assert r.status == 200
        text = r.read().decode()
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            name, labels, value = m.groups()
            out[name + ("{%s}" % labels if labels else "")] = float(value)
    return out


def rejected(metrics, code):
    return metrics.get('attuned_lines_rejected_total{code="%s"}' % code, 0)


class Canary:
    """A client that checks, whenever asked, that the daemon answers it promptly."""

    def __init__(self, d, limit=1.0):
        self.c = d.connect()
        self.limit = limit * SLOW
        self.worst = 0.0
        self.n = 0

    def check(self):
        t0 = time.monotonic()
        self.n += 1
        self.c.send(utt("canary", self.n, text="still fine %d" % self.n))
        self.c.wait_ack(timeout=10)
        took = time.monotonic() - t0
        self.worst = max(self.worst, took)
        assert took < self.limit, "the canary waited %.2fs for its ack" % took


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- slow and silent clients -----------------------------------------------------------------

def test_slowloris_clients_do_not_hold_up_others(attuned):
    """Fifty clients dribble a line a byte a second; the others' lines are stored and acked
    meanwhile, and each slow line is handled once its newline arrives."""
    d = attuned(store_text="full")
    canary = Canary(d)
    slow = [d.connect() for _ in range(50)]
    lines = [json.dumps(utt("slow-%d" % i, 0, text="s")).encode() + b"\n"
             for i in range(len(slow))]
    t0 = time.monotonic()
    for k in range(3):
        for c, line in zip(slow, lines):
            c.sock.sendall(line[k:k + 1])
        for _ in range(4):
            canary.check()
            time.sleep(0.2)
    for c, line in zip(slow, lines):
        c.send_raw(line[3:])
    for c in slow:
        assert c.wait_ack(1) == []
    assert time.monotonic() - t0 < 15 * SLOW
    assert d.rows("SELECT COUNT(*) FROM utterances WHERE conversation_id LIKE 'slow-%'") == [
        (len(slow),)]


def test_a_slowloris_line_is_timed_out_while_others_stream(attuned):
    """A client that sends a byte every 0.2 s keeps its connection from being idle, but its
    line does not end: line_timeout_ms after its first byte it is answered line_too_long and
    closed, and counted. Another client streaming utterances meanwhile gets every ack."""
    d = with_metrics(attuned, store_text="full", line_timeout_ms=1000, idle_timeout_ms=4000)
    canary = Canary(d)
    slow = d.connect()
    slow.send(utt("slowloris", 0))
    slow.wait_ack(1)
    line = json.dumps(utt("slowloris", 1, text="never ends " * 20)).encode()
    got, i = [], 0
    t0 = time.monotonic()
    while not slow.eof:
        assert time.monotonic() - t0 < 15 * SLOW, "not closed after %d bytes; got %s" % (i, got)
        try:
            slow.sock.sendall(line[i:i + 1])
            got += slow.poll()
        except (OSError, Closed):
            break
        i += 1
        canary.check()
        time.sleep(0.2)
    got += slow.expect_closed(timeout=10)
    took = time.monotonic() - t0
    assert 0.8 <= took < 15 * SLOW, took
    assert [(m["type"], m["line"], m["code"]) for m in got] == [("error", 2, "line_too_long")]
    assert "line_timeout_ms" in got[0]["message"]
    canary.check()
    m = scrape(d)
    assert m['attuned_connections_closed_total{reason="line_timeout"}'] == 1
    assert m['attuned_connections_closed_total{reason="idle_timeout"}'] == 0
    assert rejected(m, "line_too_long") == 1
    assert m["attuned_connections"] == 1
    assert d.rows("SELECT seq FROM utterances WHERE conversation_id = 'slowloris'") == [(0,)]
    assert d.rows("SELECT COUNT(*) FROM utterances WHERE conversation_id = 'canary'") == [
        (canary.n,)]


def test_clients_that_never_read_stay_bounded(attuned):
    """Clients that send as fast as they can and never read a reply: once a client's unsent
    replies reach client_queue_bytes the daemon stops reading it, so its memory stays bounded
    while the canary's lines are stored and acked."""
    # A short pipeline bounds how long the canary's line can wait behind theirs.
    d = with_metrics(attuned, client_queue_bytes=65536, queue_lines=256)
    canary = Canary(d)
    canary.check()
    rss0 = d.rss_kb()
    stuck = [d.connect(rcvbuf=4096) for _ in range(4)]
    # Every ping is answered with a pong, every broken line with an error of ~100 bytes, and
    # the utterances with acks.
    chunk = ((b'{"type":"ping"}\n' + b"x\n") * 8 + json.dumps(utt("stuck", None)).encode() +
             b"\n") * 64
    sent = [0] * len(stuck)
    for c in stuck:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        c.sock.setblocking(False)
    t0 = last = time.monotonic()
    while time.monotonic() - last < 1.0:
        progressed = False
        for i, c in enumerate(stuck):
            try:
                sent[i] += c.sock.send(chunk)
                progressed = True
            except BlockingIOError:
                pass
        if progressed:
            last = time.monotonic()
        else:
            canary.check()
            time.sleep(0.05)
        assert time.monotonic() - t0 < 30, "the daemon never stopped reading"
    canary.check()
    # Four clients, each bounded by one read, its framer and 64 KiB of replies.
    assert_rss_grew_less(d, rss0, 48)
    m = scrape(d)
    assert m["attuned_backpressure_pauses_total"] >= len(stuck)
    assert m["attuned_connections"] == len(stuck) + 1
    for c in stuck:
        c.close()
    canary.check()
    assert min(sent) > 64 * 1024


# ---- one huge line ---------------------------------------------------------------------------

def test_a_100mb_line_is_answered_discarded_and_bounded(attuned):
    d = with_metrics(attuned, store_text="full")   # max_line_bytes: 1 MiB
    canary = Canary(d)
    c = d.connect()
    rss0 = peak = d.rss_kb()
    block = b"x" * (1 << 20)
    for i in range(100):
        c.sock.sendall(block)
        peak = max(peak, d.rss_kb())
        if i % 25 == 0:
            canary.check()
    c.send_raw(b"\n")
    c.send(utt("after-the-long-line", 0))
    others = c.wait_ack(2)
    assert [(m["type"], m["line"], m["code"]) for m in others] == [(
        "error", 1, "line_too_long")]
    assert "max_line_bytes" in others[0]["message"]
    # One line of buffer (1 MiB, doubled as it grows) and one read, not 100 MB.
    assert_rss_grew_less(d, rss0, 16, now_kb=peak)
    assert d.rows("SELECT conversation_id FROM utterances WHERE conversation_id <> 'canary'") == [
        ("after-the-long-line",)]
    m = scrape(d)
    assert rejected(m, "line_too_long") == 1
    canary.check()


# ---- malformed JSON --------------------------------------------------------------------------

U = '{"type":"utterance","conversation_id":"c-hostile","speaker":"customer","text":%s%s}'
HOSTILE = [
    # deeply nested: jansson stops at depth 2048, whatever the nesting is made of
    ("nested-arrays", b"[" * 100000, "invalid_json"),
    ("nested-objects", b'{"a":' * 100000, "invalid_json"),
    ("nested-in-a-field", (U % ('"x"', ',"extra":' + "[" * 3000 + "]" * 3000)).encode(),
     "invalid_json"),
    ("nested-closed", (U % ('"x"', ',"extra":' + '{"a":' * 3000 + "1" + "}" * 3000)).encode(),
     "invalid_json"),
    # duplicate keys: never last-wins
    ("duplicate-type", b'{"type":"ping","type":"utterance"}', "invalid_json"),
    ("duplicate-text", (U % ('"x"', ',"text":"y"')).encode(), "invalid_json"),
    ("duplicate-nested", (U % ('"x"', ',"o":{"k":1,"k":2}')).encode(), "invalid_json"),
    # NUL bytes, raw and escaped
    ("nul-after", b'{"type":"ping"}\x00', "invalid_json"),
    ("nul-in-string", (U % ('"a\x00b"', "")).encode(), "invalid_json"),
    ("nul-escaped", (U % ('"a\\u0000b"', "")).encode(), "bad_field"),
    ("nul-in-key", b'{"type":"ping","a\\u0000":1}', "bad_field"),
    ("nul-in-an-unknown-field", (U % ('"x"', ',"extra":{"a":["\\u0000"]}')).encode(),
     "bad_field"),
    ("nul-only", b"\x00" * 1000, "invalid_json"),
    # invalid UTF-8
    ("utf8-ff", (U % ('"', '')).encode()[:-1] + b'caf\xff"}', "invalid_utf8"),
    ("utf8-overlong", (U % ('"', '')).encode()[:-1] + b'\xc0\xaf"}', "invalid_utf8"),
    ("utf8-surrogate", (U % ('"', '')).encode()[:-1] + b'\xed\xa0\x80"}', "invalid_utf8"),
    ("utf8-truncated", (U % ('"', '')).encode()[:-1] + b'\xf0\x9f\x98"}', "invalid_utf8"),
    ("utf8-in-key", b'{"type":"ping","\xfe":1}', "invalid_utf8"),
    ("lone-surrogate-escape", (U % ('"\\ud800"', "")).encode(), "invalid_json"),
    # numbers out of range: of the field, then of the parser
    ("seq-int64-max", (U % ('"x"', ',"seq":9223372036854775807')).encode(), "bad_field"),
    ("seq-int64-min", (U % ('"x"', ',"seq":-9223372036854775808')).encode(), "bad_field"),
    ("ts-huge-real", (U % ('"x"', ',"ts":1e300')).encode(), "bad_field"),
    ("start-ms-negative", (U % ('"x"', ',"start_ms":-1e18')).encode(), "bad_field"),
    ("csat-huge", b'{"type":"outcome","conversation_id":"c-hostile","csat":1e308}', "bad_field"),
    ("nps-int64", b'{"type":"outcome","conversation_id":"c-hostile","nps":9223372036854775807}',
     "bad_field"),
    ("seq-past-int64", (U % ('"x"', ',"seq":99999999999999999999')).encode(), "bad_field"),
    ("real-overflow", (U % ('"x"', ',"seq":1e400')).encode(), "bad_field"),
    ("overflow-in-unknown-field", (U % ('"x"', ',"extra":-1e400')).encode(), "bad_field"),
    ("many-overflows", (U % ('"x"', ',"a":1e400,"b":-1e400,"c":1e400,"d":2e400,"e":1e999')
                        ).encode(), "bad_field"),
    ("overflow-then-broken", (U % ('"x"', ',"a":1e400 junk')).encode(), "invalid_json"),
    ("overflow-as-key", b'{1e400:1}', "invalid_json"),
    # what the error quotes back: cut in the middle of a character, or holding control bytes
    ("type-cut-mid-character", ('{"type":"a' + "\u00e9" * 40 + '"}').encode(), "unknown_type"),
    ("type-with-newline", b'{"type":"utter\\nance"}', "unknown_type"),
    ("type-with-escape-codes", b'{"type":"\\u001b[31mred\\u0007"}', "unknown_type"),
    # huge strings where an identifier belongs
    ("huge-conversation-id", ('{"type":"start","conversation_id":"%s"}' % ("c" * 500000)).encode(),
     "bad_field"),
]

# Hostile but valid: stored (unknown fields are ignored), the text byte for byte.
ACCEPTED = [
    ("nested-within-the-limit",
     (U % ('"nested ok"', ',"extra":' + "[" * 1000 + "]" * 1000)).encode(), "nested ok"),
    ("emoji", (U % (json.dumps("\U0001F620\U0001F621 \u2639\ufe0f fine \U0001F44D\U0001F3FD"), "")
               ).encode(), "\U0001F620\U0001F621 \u2639\ufe0f fine \U0001F44D\U0001F3FD"),
    ("emoji-escaped", (U % ('"\\ud83d\\ude20 escaped"', "")).encode(), "\U0001F620 escaped"),
    ("many-keys", (U % ('"many keys"', "," + ",".join('"k%d":%d' % (i, i)
                                                      for i in range(50000)))).encode(),
     "many keys"),
    ("underflow", (U % ('"tiny"', ',"extra":1e-400')).encode(), "tiny"),
]


def test_malformed_lines_are_answered_counted_and_isolated(attuned):
    d = with_metrics(attuned, store_text="full")
    canary = Canary(d)
    c = d.connect()
    rss0 = d.rss_kb()
    before = scrape(d)
    for name, line, code in HOSTILE:
        n = c.send_raw(line + b"\n")
        err = c.recv(timeout=10)
        assert (err.get("type"), err.get("line"), err.get("code")) == ("error", n, code), (
            name, err)
        assert err["message"] and not re.search(r"[\x00-\x1f\x7f]", err["message"]), (name, err)
        canary.check()
    for name, line, text in ACCEPTED:
        n = c.send_raw(line + b"\n")
        assert c.wait_ack(n) == [], name
        assert d.rows("SELECT text FROM utterances WHERE conversation_id = 'c-hostile' "
                      "ORDER BY rowid DESC LIMIT 1") == [(text,)], name
        canary.check()
    # Rejected lines stored nothing; the accepted ones are exactly what was stored.
    assert d.rows("SELECT COUNT(*) FROM utterances WHERE conversation_id = 'c-hostile'") == [
        (len(ACCEPTED),)]
    assert d.rows("SELECT COUNT(*) FROM conversations WHERE conversation_id LIKE 'ccc%'") == [(0,)]
    after = scrape(d)
    for code in {code for _, _, code in HOSTILE}:
        want = sum(1 for _, _, k in HOSTILE if k == code)
        assert rejected(after, code) - rejected(before, code) == want, code
    assert (after["attuned_lines_received_total"] - before["attuned_lines_received_total"]
            == len(HOSTILE) + len(ACCEPTED) + canary.n)
    assert_rss_grew_less(d, rss0, 32)


def test_malformed_lines_pipelined_in_one_write(attuned):
    """The same lines all at once, between good ones: each gets its error, in order."""
    d = attuned(store_text="full")
    c = d.connect()
    data, want = b"", {}
    for i, (name, line, code) in enumerate(HOSTILE):
        data += json.dumps(utt("c-pipelined", i)).encode() + b"\n" + line + b"\n"
        want[2 * i + 2] = code
    c.send_raw(data)
    others = c.wait_ack(timeout=30)
    assert {m["line"]: m["code"] for m in others} == want
    assert d.rows("SELECT COUNT(*) FROM utterances WHERE conversation_id = 'c-pipelined'") == [
        (len(HOSTILE),)]


# Duplicate keys, with the message the line gets: found in any object, at any depth, whatever
# the whitespace around the colon, and before any later fault of the line; colons in strings,
# after a quote or not, change nothing (None: accepted).
DUPLICATES = [
    (b'{"type":"ping","type":"ping",}', "invalid JSON at byte 21: duplicate object key near "
     "'\"type\"'"),
    (b'{"type":"ping","a":1,"a" :2}', "invalid JSON at byte 24: duplicate object key near "
     "'\"a\"'"),
    (b'{"type":"ping","a":1,"a"\t:\r2}', "invalid JSON at byte 24: duplicate object key near "
     "'\"a\"'"),
    (b'[{"a":1,"a":2}]', "invalid JSON at byte 11: duplicate object key near '\"a\"'"),
    (b'[{"a":1,"b":2}]', "a line must be one JSON object"),
    (b'{"type":"conversation","conversation_id":"dup-c","turns":[{"speaker":"agent",'
     b'"text":"a","text":"b"}]}', "invalid JSON at byte 94: duplicate object key near "
     "'\"text\"'"),
    (b'{"type":"ping","x":{"k":[{"q":1}],"k":2}}', "invalid JSON at byte 37: duplicate object "
     "key near '\"k\"'"),
    (b'{"type":"ping","x":{"a":{"b":1,"c":2},"d":[{"e":1},{"e":1,"f":2}]}}', None),
    (b'{"type":"ping","s":":","t":" : ","u":"\\":"}', None),
    (b'{"type":"utterance","conversation_id":"dup-u","seq":0,"speaker":"agent",'
     b'"text":"he said \\":\\" and \\" :\\" twice"}', None),
]


def test_duplicate_keys_are_refused_wherever_they_are(attuned):
    d = attuned(store_text="full")
    c = d.connect()
    first = c.lines + 1
    c.send_raw(b"".join(line + b"\n" for line, _ in DUPLICATES))
    others = c.wait_ack(timeout=30)
    got = {m["line"] - first: m.get("message") for m in others if m["type"] == "error"}
    assert got == {i: why for i, (_, why) in enumerate(DUPLICATES) if why}
    assert d.rows("SELECT text FROM utterances WHERE conversation_id = 'dup-u'") == [
        ('he said ":" and " :" twice',)]
    assert d.rows("SELECT COUNT(*) FROM conversations WHERE conversation_id = 'dup-c'") == [(0,)]


# ---- ten thousand connections ----------------------------------------------------------------

@pytest.mark.slow
def test_ten_thousand_connections_at_once(attuned):
    """10,000 connections opened at once against max_connections = 1000: at most 1000 are
    kept, every other one is told overloaded (line 0) and closed, the refusals are counted,
    the canary never waits, and every kept connection works."""
    max_conns = 1000
    # Started with the soft limit a login shell often leaves (1024), attuned raises its own to
    # the hard limit: otherwise accept would fail past ~1000 descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    try:
        d = with_metrics(attuned, max_connections=max_conns)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with open("/proc/%d/limits" % d.pid) as f:
        limits = [line.split()[3:5] for line in f if line.startswith("Max open files")][0]
    assert limits[0] == limits[1], limits
    n = min(2000 if SANITIZED else 10000, raise_nofile(10000 + 512) - 512)
    if n < 2000:
        pytest.skip("RLIMIT_NOFILE too low for this test (%d)" % n)
    canary = Canary(d)
    canary.check()
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", d.port))
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, [b"", False])
        canary.check()
        refused, bad = 0, []
        deadline = time.monotonic() + 60 * SLOW
        while True:
            for key, _ in sel.select(timeout=0.2):
                state = key.data
                try:
                    data = key.fileobj.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if data:
                    state[0] += data
                    continue
                sel.unregister(key.fileobj)
                state[1] = True
                msgs = [json.loads(x) for x in state[0].splitlines()]
                if [(m.get("type"), m.get("line"), m.get("code")) for m in msgs] == [
                        ("error", 0, "overloaded")]:
                    refused += 1
                else:
                    bad.append(msgs)
            m = scrape(d)
            if (m["attuned_connections_total"] >= n + 1 and
                    m["attuned_connections_refused_total"] == refused + len(bad)):
                break
            assert time.monotonic() < deadline, "only %d of %d connections were answered" % (
                m["attuned_connections_total"] - 1, n)
        canary.check()
        assert bad == [], bad[:5]
        kept = n - refused
        assert kept <= max_conns - 1
        assert kept >= max_conns // 2, "only %d connections kept" % kept
        assert m["attuned_connections_refused_total"] == refused
        # The last refused connections may still be closing.
        while scrape(d)["attuned_connections"] != kept + 1:
            assert time.monotonic() < deadline, scrape(d)["attuned_connections"]
            time.sleep(0.05)
        # Every kept connection works.
        open_socks = [s for s in socks if s.fileno() >= 0 and sel.get_map().get(s.fileno())]
        assert len(open_socks) == kept
        for s in open_socks:
            s.setblocking(True)
            s.sendall(b'{"type":"ping"}\n')
        for s in open_socks:
            s.settimeout(10)
            assert s.recv(100) == b'{"type":"pong"}\n'
        canary.check()
    finally:
        sel.close()
        for s in socks:
            s.close()
    # Every slot comes back.
    deadline = time.monotonic() + 20
    while scrape(d)["attuned_connections"] != 1:
        assert time.monotonic() < deadline, "connections were not released"
        time.sleep(0.1)
    late = d.connect()
    late.send({"type": "ping"})
    assert late.recv() == {"type": "pong"}
    canary.check()


# ---- catastrophic backtracking ---------------------------------------------------------------

def test_a_catastrophic_pattern_hits_the_limit_and_is_skipped(attuned, tmp_path):
    """A lexicon with (a+)+$ and texts built to make it backtrack: each is scored without that
    pattern (and stored), counted, and warned about, and the loop never waits on it."""
    lex = tmp_path / "lexicons"
    shutil.copytree(REPO / "lexicons", lex)
    with open(lex / "markers" / "frustration.tsv", "a") as f:
        f.write("fru-test-catastrophic\tmatch\tanger\t*\t(a+)+$\n")
    d = with_metrics(attuned, store_text="none", lexicons=str(lex))
    canary = Canary(d)
    c = d.connect()
    # Without the backtracking trap the pattern fires: it is live.
    c.send(utt("c-cat", 0, text="aaaa"))
    c.wait_ack()
    assert ("fru-test-catastrophic",) in d.rows(
        "SELECT pattern FROM markers WHERE conversation_id = 'c-cat' AND seq = 0")
    n = 40
    t0 = time.monotonic()
    c.send(*[utt("c-cat", i, text="a" * (2000 + i) + "!") for i in range(1, n + 1)])
    while c.acked < n + 1:
        canary.check()
        try:
            c.recv(0.05)
        except TimeoutError:
            pass
        assert time.monotonic() - t0 < 30 * SLOW
    assert d.rows("SELECT COUNT(*) FROM utterances WHERE conversation_id = 'c-cat'") == [(n + 1,)]
    assert d.rows("SELECT seq FROM markers WHERE conversation_id = 'c-cat' AND "
                  "pattern = 'fru-test-catastrophic'") == [(0,)]
    # Warned, but at most once a second per worker: such texts cannot flood the log.
    warnings = re.findall(r"warn worker: conversation c-cat seq \d+: \d+ pattern\(s\) hit the "
                          r"PCRE2 match limit", d.log())
    assert 1 <= len(warnings) < n
    assert scrape(d)["attuned_pattern_limit_hits_total"] >= n

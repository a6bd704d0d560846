"""attuned as a system service: sd_notify and the watchdog on a fake NOTIFY_SOCKET, SIGHUP
reloads of the configuration and the lexicons (good and bad), the metrics endpoint under load,
--check-config exit codes, `make install` (DESTDIR layout; a PREFIX install whose commands find
the installed lexicons), the systemd unit and the man pages.

The daemon is started here by a small launcher of our own because these tests need what a
service manager does: environment variables (NOTIFY_SOCKET, WATCHDOG_USEC, and WATCHDOG_PID
equal to the daemon's own pid, hence the `sh -c 'export WATCHDOG_PID=$$; exec ...'` wrapper), a
configuration file they rewrite between reloads, and the metrics port.
"""
import http.client
import os
import pathlib
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("ATTUNE_BUILD", REPO / "build"))
ATTUNED = BUILD / "attuned"

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
METRICS_ON = re.compile(r"metrics on 127\.0\.0\.1:(\d+)")


# ---- launching ------------------------------------------------------------------------------

class Service:
    """One run of attuned as a service manager would start it."""

    def __init__(self, workdir, args=(), env=None, watchdog_pid_self=False):
        self.workdir = pathlib.Path(workdir)
        self.db = self.workdir / "attune.db"
        self.log_path = self.workdir / "attuned.log"
        cmd = [str(ATTUNED), "--listen", "127.0.0.1:0", "--db", str(self.db), *args]
        if watchdog_pid_self:
            # WATCHDOG_PID must be the daemon's pid: the shell exports its own and execs.
            cmd = ["sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh", *cmd]
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        full_env.update(env or {})
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, cwd=str(self.workdir), env=full_env)
        self.port = self.metrics_port = None
        self.terminated = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = LISTENING.search(self.log())
            if m:
                self.port = int(m.group(1))
                mm = METRICS_ON.search(self.log())
                self.metrics_port = int(mm.group(1)) if mm else None
                return
            if self.proc.poll() is not None:
                raise AssertionError("attuned exited with %d:\n%s" % (self.proc.returncode,
                                                                      self.log()))
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError("attuned did not start:\n" + self.log())

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern, count=1, timeout=20):
        """Waits until pattern (a regex) matches count times in the log; returns the matches."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.log())
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError("no %r (x%d) in the log:\n%s" % (pattern, count,
                                                                       self.log()[-4000:]))
            assert self.proc.poll() is None, "attuned exited:\n" + self.log()[-4000:]
            time.sleep(0.02)

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    def term(self):
        self.proc.send_signal(signal.SIGTERM)
        self.terminated = True

    def stop(self, timeout=30):
        # One SIGTERM only, as systemd sends: once drained, attuned closes its signal handles.
        if self.proc.poll() is None and not self.terminated:
            self.term()
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()
        return rc

    def rows(self, sql, params=()):
        con = sqlite3.connect(str(self.db), timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()


@pytest.fixture
def service(tmp_path):
    started = []

    def start(*args, **kw):
        s = Service(tmp_path, args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            assert s.stop() == 0, s.log()[-4000:]


class Client:
    """A minimal protocol client: lines out, replies in, waits for cumulative acks."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.sent = 0
        self.acked = 0
        self.replies = []

    def send(self, lines):
        self.sock.sendall(b"".join(l.encode() + b"\n" for l in lines))
        self.sent += len(lines)

    def wait_ack(self, timeout=60):
        import json
        deadline = time.monotonic() + timeout
        while self.acked < self.sent:
            assert time.monotonic() < deadline, "acked %d of %d" % (self.acked, self.sent)
            while b"\n" not in self.buf:
                data = self.sock.recv(1 << 16)
                assert data, "connection closed; replies %s" % self.replies[-3:]
                self.buf += data
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            self.replies.append(msg)
            if msg["type"] == "ack":
                self.acked = msg["through"]
        return self.replies

    def read_until_closed(self, timeout=30):
        import json
        self.sock.settimeout(timeout)
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                break
            self.buf += data
        for line in self.buf.split(b"\n"):
            if line:
                self.replies.append(json.loads(line))
        self.buf = b""
        return self.replies

    def errors(self):
        return [r for r in self.replies if r["type"] == "error"]

    def close(self):
        self.sock.close()


def utterance(cid, seq, text="thanks, that helps", speaker="customer"):
    return ('{"type":"utterance","conversation_id":"%s","seq":%d,"speaker":"%s","text":"%s"}'
            % (cid, seq, speaker, text))


# ---- sd_notify --------------------------------------------------------------------------------

class NotifySocket:
    """A fake NOTIFY_SOCKET: an AF_UNIX datagram socket collecting what attuned sends."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="attn-", dir="/tmp")  # AF_UNIX paths are short
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # each a list of "KEY=VALUE" fields, in arrival order

    def poll(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return
            self.messages.append(data.decode().split("\n"))

    def wait_for(self, field, after=0, timeout=20):
        """Index of the first message at or after `after` that has field."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(after, len(self.messages)):
                if field in self.messages[i]:
                    return i
            left = deadline - time.monotonic()
            assert left > 0, "no %s after message %d; got %s" % (field, after, self.messages)
            self.poll(min(left, 0.05))

    def count(self, field, after=0):
        return sum(field in m for m in self.messages[after:])

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify():
    n = NotifySocket()
    yield n
    n.close()


def test_notify_ready_reload_stopping_and_watchdog_pings(service, notify):
    s = service("--metrics-listen", "", env={"NOTIFY_SOCKET": notify.path,
                                             "WATCHDOG_USEC": "200000"},
                watchdog_pid_self=True)
    ready = notify.wait_for("READY=1")
    # READY=1 comes once attuned listens and the store is open.
    assert s.db.exists()
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b'{"type":"ping"}\n')
        assert sock.recv(100) == b'{"type":"pong"}\n'
    # The watchdog pings every WATCHDOG_USEC / 2 while the writer is healthy.
    first_ping = notify.wait_for("WATCHDOG=1", after=ready)
    notify.poll(1.0)
    assert notify.count("WATCHDOG=1", first_ping) >= 5, notify.messages
    assert "pinging every 100 ms" in s.log()

    # SIGHUP: RELOADING=1 (with the monotonic time systemd 253+ wants), then READY=1 when
    # the lexicons are rebuilt.
    mark = len(notify.messages)
    s.hup()
    reloading = notify.wait_for("RELOADING=1", after=mark)
    assert any(f.startswith("MONOTONIC_USEC=") and int(f.split("=")[1]) > 0
               for f in notify.messages[reloading])
    notify.wait_for("READY=1", after=reloading + 1)
    s.wait_log(r"lexicons unchanged")

    mark = len(notify.messages)
    s.term()
    notify.wait_for("STOPPING=1", after=mark)
    assert s.stop() == 0


def test_no_watchdog_pings_for_another_pid(service, notify):
    # systemd sets WATCHDOG_PID to the main pid; a process with another pid must not ping.
    service("--metrics-listen", "", env={"NOTIFY_SOCKET": notify.path,
                                         "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    ready = notify.wait_for("READY=1")
    notify.poll(0.6)
    assert notify.count("WATCHDOG=1") == 0, notify.messages
    assert ready >= 0


def test_watchdog_withheld_while_the_writer_is_stuck(service, notify):
    s = service("--metrics-listen", "127.0.0.1:0",
                env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"},
                watchdog_pid_self=True)
    notify.wait_for("WATCHDOG=1")
    assert http_get(s.metrics_port, "/healthz")[:2] == (200, "ok\n")
    # Another process holding the write lock stalls the writer's commits.
    lock = sqlite3.connect(str(s.db), timeout=10, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        c = Client(s.port)
        c.send([utterance("stuck-1", 0)])
        s.wait_log(r"withholding watchdog pings")
        notify.poll(0.1)  # pings sent before the writer counted as stuck
        mark = len(notify.messages)
        notify.poll(1.0)
        assert notify.count("WATCHDOG=1", mark) == 0, notify.messages[mark:]
        status, body, _ = http_get(s.metrics_port, "/healthz")
        assert status == 503 and body.startswith("unhealthy: "), body
        assert c.acked == 0
    finally:
        # Released, the batch commits, is acknowledged, and pinging resumes.
        lock.execute("ROLLBACK")
        lock.close()
    c.wait_ack()
    s.wait_log(r"the writer is healthy again")
    notify.wait_for("WATCHDOG=1", after=len(notify.messages))
    assert http_get(s.metrics_port, "/healthz")[:2] == (200, "ok\n")
    c.close()


# ---- reloads ------------------------------------------------------------------------------

def write_ini(path, text):
    path.write_text("[metrics]\nlisten =\n\n" + text)


def test_reload_good_then_bad_config(service, tmp_path):
    ini = tmp_path / "attuned.ini"
    write_ini(ini, "[server]\nidle_timeout_ms = 60000\n")
    s = service("-c", str(ini))
    c = Client(s.port)
    c.send([utterance("cfg-1", 0)])
    c.wait_ack()
    assert not c.errors()
    c.close()

    # A good file: its reloadable keys take effect (here a token becomes required).
    write_ini(ini, "[server]\nauth_token = s3cret\n")
    s.hup()
    s.wait_log(r"configuration reloaded")
    s.wait_log(r"lexicons unchanged")
    c = Client(s.port)
    c.send([utterance("cfg-1", 1)])
    c.read_until_closed()
    assert [e["code"] for e in c.errors()] == ["unauthorized"]
    c.close()

    # A bad file: the reload is refused with file, line and key, and the running settings
    # (the token) stay.
    write_ini(ini, "[server]\nauth_token = other\nno_such_key = 1\n")
    s.hup()
    failed = s.wait_log(r"reload failed, keeping the running configuration: ([^\n]*)")
    assert "attuned.ini:6" in failed[0] and "no_such_key" in failed[0], failed
    s.wait_log(r"lexicons unchanged", count=2)
    c = Client(s.port)
    c.send(['{"type":"hello","token":"s3cret"}', utterance("cfg-1", 2)])
    c.wait_ack()
    assert not c.errors(), c.errors()
    c.close()
    assert s.rows("select seq from utterances where conversation_id = 'cfg-1' order by seq") \
        == [(0,), (2,)]
    assert s.stop() == 0


def check_config(*args, env=None):
    return subprocess.run([str(ATTUNED), "--check-config", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def model_id_of(lexicons):
    p = check_config("--lexicons", str(lexicons))
    assert p.returncode == 0, p.stderr
    return re.search(r"model (m-[0-9a-f]+)", p.stdout).group(1)


def test_reload_good_then_bad_lexicons(service, tmp_path):
    lex = tmp_path / "lexicons"
    shutil.copytree(REPO / "lexicons", lex)
    old_id = model_id_of(lex)
    s = service("--lexicons", str(lex), "--metrics-listen", "127.0.0.1:0")
    assert s.wait_log(r"model (m-[0-9a-f]+) built from")[0] == old_id
    c = Client(s.port)
    c.send([utterance("lex-1", 0, text="zorblat")])
    c.wait_ack()

    # A good change: a new word with a strongly positive valence. The new model's id is
    # logged, exported and stored with utterances scored after the swap.
    with open(lex / "vader" / "vader_lexicon.txt", "a") as f:
        f.write("zorblat\t3.1\t0.5\t[3, 3, 3, 3, 3, 3, 3, 3, 3, 4]\n")
    new_id = model_id_of(lex)
    assert new_id != old_id
    s.hup()
    assert s.wait_log(r"model (m-[0-9a-f]+) replaces (m-[0-9a-f]+)")[0] == (new_id, old_id)
    c.send([utterance("lex-1", 1, text="zorblat")])
    c.wait_ack()
    _, samples = parse_metrics(http_get(s.metrics_port, "/metrics")[1])
    assert (("attuned_model_info", (("model_id", new_id),))) in samples

    # A broken change: the reload is refused, naming the file and line, and the running model
    # stays.
    with open(lex / "markers" / "frustration.tsv", "a") as f:
        f.write("fru-broken\tmatch\tanger\t*\t(unclosed\n")
    s.hup()
    failed = s.wait_log(r"lexicon reload failed, keeping model (m-[0-9a-f]+): ([^\n]*)")
    assert failed[0][0] == new_id
    assert "frustration.tsv:" in failed[0][1] and "fru-broken" in failed[0][1], failed
    c.send([utterance("lex-1", 2, text="zorblat")])
    c.wait_ack()
    assert not c.errors()
    c.close()
    rows = s.rows("select seq, model_id, compound from utterances "
                  "where conversation_id = 'lex-1' order by seq")
    assert [(r[0], r[1]) for r in rows] == [(0, old_id), (1, new_id), (2, new_id)]
    assert rows[0][2] == 0 and rows[1][2] > 0.5 and rows[2][2] == rows[1][2]
    assert s.stop() == 0


# ---- --check-config -----------------------------------------------------------------------

def test_check_config_exit_codes(tmp_path):
    good = tmp_path / "good.ini"
    good.write_text("[server]\nmax_connections = 10\n[metrics]\nlisten = 127.0.0.1:9\n")
    p = check_config("-c", str(good))
    assert p.returncode == 0, p.stderr
    assert re.match(r"configuration and lexicons are valid \(model m-[0-9a-f]+", p.stdout)

    bad_key = tmp_path / "bad_key.ini"
    bad_key.write_text("[server]\nmax_connections = 10\nmax_conections = 10\n")
    p = check_config("-c", str(bad_key))
    assert p.returncode == 2
    assert "bad_key.ini:3" in p.stderr and "max_conections" in p.stderr, p.stderr

    bad_value = tmp_path / "bad_value.ini"
    bad_value.write_text("[store]\nbatch_ms = 0\n")
    p = check_config("-c", str(bad_value))
    assert p.returncode == 2
    assert "bad_value.ini:2" in p.stderr and "batch_ms" in p.stderr, p.stderr

    p = check_config("--metrics-listen", "localhost:9420")
    assert p.returncode == 2 and "--metrics-listen" in p.stderr, p.stderr

    lex = tmp_path / "lexicons"
    shutil.copytree(REPO / "lexicons", lex)
    with open(lex / "markers" / "frustration.tsv", "a") as f:
        f.write("fru-broken\tmatch\tanger\t*\t(unclosed\n")
    p = check_config("--lexicons", str(lex))
    assert p.returncode == 2
    assert "frustration.tsv" in p.stderr, p.stderr
    p = check_config("--lexicons", str(tmp_path / "missing"))
    assert p.returncode == 2


# ---- metrics --------------------------------------------------------------------------------

def http_get(port, path, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read().decode(), dict(r.getheaders())
    finally:
        conn.close()


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(,|$)')


def parse_metrics(text):
    """Parses the Prometheus text format, strictly: every sample belongs to a family declared
    by a TYPE line before it, no sample repeats, histogram buckets are cumulative and end in
    +Inf equal to _count. Returns ({family: type}, {(name, labels): value})."""
    types, samples = {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, "family declared twice: " + name
            types[name] = typ
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels_text, value = m.groups()
        labels = []
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = LABEL.match(labels_text, pos)
                assert lm, "bad labels in %r" % line
                labels.append((lm.group(1), lm.group(2)))
                pos = lm.end()
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                family = name[:-len(suffix)]
        assert family in types, "sample before its TYPE: " + line
        if types[family] == "counter":
            assert name.endswith("_total"), name
        key = (name, tuple(sorted(labels)))
        assert key not in samples, "duplicate sample: " + line
        samples[key] = float(value)
    for family, typ in types.items():
        if typ != "histogram":
            continue
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in samples.items()
                         if k[0] == family + "_bucket")
        assert buckets and buckets[-1][0] == float("inf"), family
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), family + " buckets are not cumulative"
        assert counts[-1] == samples[(family + "_count", ())], family
        assert samples[(family + "_sum", ())] >= 0
    return types, samples


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


BAD_LINES = {
    "invalid_json": ['{"type":"utterance",', "not json at all", "{]"],
    "missing_field": ['{"type":"utterance","conversation_id":"x","speaker":"agent"}',
                      '{"type":"end"}'],
    "unknown_type": ['{"type":"teleport","conversation_id":"x"}'],
    "bad_field": ['{"type":"utterance","conversation_id":"x","speaker":"robot","text":"hi"}',
                  '{"type":"utterance","conversation_id":"x","seq":-1,"speaker":"agent",'
                  '"text":"hi"}'],
    "not_object": ["[1,2,3]", "[]"],
}


@pytest.mark.slow
def test_metrics_under_load_match_what_was_sent(service):
    s = service("--metrics-listen", "127.0.0.1:0")
    assert s.metrics_port, s.log()
    n_conns, n_per_conn = 4, 600
    bad = [(code, line) for code, lines in BAD_LINES.items() for line in lines]

    scrapes, problems, stop = [], [], threading.Event()

    def scraper():
        # One keep-alive connection, as Prometheus uses; every scrape must parse, and no
        # counter may go down between scrapes.
        conn = http.client.HTTPConnection("127.0.0.1", s.metrics_port, timeout=10)
        last = {}
        while not stop.is_set():
            try:
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                body = r.read().decode()
                assert r.status == 200
                assert r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
                types, samples = parse_metrics(body)
                for key, v in samples.items():
                    family = key[0]
                    for suffix in ("_bucket", "_sum", "_count"):
                        if family.endswith(suffix) and family[:-len(suffix)] in types:
                            family = family[:-len(suffix)]
                    if types[family] in ("counter", "histogram") and key in last:
                        assert v >= last[key], "%s went down: %s -> %s" % (key, last[key], v)
                last = samples
                scrapes.append(samples)
            except Exception as e:  # reported by the main thread
                problems.append(repr(e))
                return
            time.sleep(0.01)
        conn.close()

    t = threading.Thread(target=scraper)
    t.start()
    try:
        clients = [Client(s.port) for _ in range(n_conns)]
        for k, c in enumerate(clients):
            lines = [utterance("load-%d-%d" % (k, j % 25), j // 25,
                               text="I have waited three weeks and nobody called back!!"
                               if j % 2 else "Thanks so much, that fixed it.",
                               speaker="customer" if j % 3 else "agent")
                     for j in range(n_per_conn)]
            if k == 0:
                for i, (_, line) in enumerate(bad):
                    lines.insert(37 * (i + 1), line)
            for i in range(0, len(lines), 100):
                c.send(lines[i:i + 100])
        for c in clients:
            c.wait_ack()
    finally:
        stop.set()
        t.join()
    assert not problems, problems
    assert len(scrapes) >= 2

    good = n_conns * n_per_conn
    errors = clients[0].errors()
    assert sorted(e["code"] for e in errors) == sorted(code for code, _ in bad), errors
    assert not any(c.errors() for c in clients[1:])
    for c in clients:
        c.close()

    _, m = parse_metrics(http_get(s.metrics_port, "/metrics")[1])
    assert value(m, "attuned_lines_received_total") == good + len(bad)
    assert value(m, "attuned_lines_accepted_total") == good
    for code in ("invalid_json", "invalid_utf8", "not_object", "missing_field", "bad_field",
                 "unknown_type", "line_too_long", "unauthorized", "overloaded",
                 "shutting_down", "internal"):
        expected = sum(1 for c, _ in bad if c == code)
        assert value(m, "attuned_lines_rejected_total", code=code) == expected, code
    assert value(m, "attuned_utterances_scored_total") == good
    assert value(m, "attuned_rows_committed_total") == good
    assert s.rows("select count(*) from utterances")[0][0] == good
    batches = value(m, "attuned_batches_committed_total")
    assert 1 <= batches <= good
    assert value(m, "attuned_commit_duration_seconds_count") == batches
    assert value(m, "attuned_commit_duration_seconds_sum") > 0
    assert value(m, "attuned_ack_latency_seconds_count") == good
    assert value(m, "attuned_commit_failures_total") == 0
    assert value(m, "attuned_duplicate_utterances_total") == 0
    assert value(m, "attuned_connections_total") == n_conns
    assert value(m, "attuned_connections_refused_total") == 0
    assert value(m, "attuned_inflight_lines") == 0
    assert value(m, "attuned_inflight_bytes") == 0
    assert value(m, "attuned_backpressure_pauses_total") >= 0
    assert value(m, "attuned_alerts_sent_total") == 0
    assert value(m, "attuned_alerts_dropped_total") == 0
    assert value(m, "attuned_writer_healthy") == 1
    assert value(m, "attuned_wal_bytes") == os.path.getsize(str(s.db) + "-wal") > 0
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", pathlib.Path(
        "/proc/%d/status" % s.proc.pid).read_text()).group(1))
    assert abs(value(m, "process_resident_memory_bytes") / 1024 - rss_kb) < rss_kb / 2
    assert abs(value(m, "process_start_time_seconds") - time.time()) < 600
    model = [dict(k[1]) for k in m if k[0] == "attuned_model_info"]
    assert model == [{"model_id": s.wait_log(r"model (m-[0-9a-f]+) built")[0]}]
    build = [dict(k[1]) for k in m if k[0] == "attuned_build_info"]
    assert build[0]["version"] == "0.1.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", build[0]["build_time"])
    # Connections closed by their clients are gone from the gauge.
    deadline = time.monotonic() + 10
    while value(m, "attuned_connections") and time.monotonic() < deadline:
        time.sleep(0.05)
        _, m = parse_metrics(http_get(s.metrics_port, "/metrics")[1])
    assert value(m, "attuned_connections") == 0
    assert s.stop() == 0


def test_commit_duration_is_the_writers_time_not_the_batch_window(service, tmp_path):
    """The writer stores a batch's lines as they come and commits after batch_ms: the commit
    duration histogram counts its own work, not the wait for more lines. Its threads carry
    names (top -H, /proc; bench/ingest.sh tells them apart by these)."""
    ini = tmp_path / "attuned.ini"
    write_ini(ini, "[store]\nbatch_ms = 1000\n")
    s = service("-c", str(ini), "--metrics-listen", "127.0.0.1:0")
    assert s.metrics_port, s.log()
    c = Client(s.port)
    t0 = time.monotonic()
    c.send([utterance("window-1", 0)])
    c.wait_ack()
    assert time.monotonic() - t0 >= 0.9  # the batch stayed open for batch_ms
    _, m = parse_metrics(http_get(s.metrics_port, "/metrics")[1])
    assert value(m, "attuned_commit_duration_seconds_count") == 1
    assert value(m, "attuned_commit_duration_seconds_sum") < 0.5
    names = sorted(p.read_text().strip()
                   for p in pathlib.Path("/proc/%d/task" % s.proc.pid).glob("*/comm"))
    assert "writer" in names and "score-0" in names, names
    c.close()


def test_metrics_http_details(service):
    s = service("--metrics-listen", "127.0.0.1:0")
    port = s.metrics_port
    status, body, headers = http_get(port, "/healthz")
    assert (status, body) == (200, "ok\n")
    status, body, headers = http_get(port, "/metrics?name=x")  # a query string is ignored
    assert status == 200 and "attuned_lines_received_total 0" in body
    status, body, headers = http_get(port, "/metrics", method="HEAD")
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 1000
    assert http_get(port, "/nowhere")[0] == 404
    status, _, headers = http_get(port, "/metrics", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"

    # Keep-alive and pipelining: two requests in one write, two responses in order.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert data.index(b"HTTP/1.1 404 Not Found\r\n") > 0
    # Garbage is answered with 400 and the connection is closed.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data
    # The protocol port still works, and the daemon drains and exits cleanly.
    c = Client(s.port)
    c.send([utterance("http-1", 0)])
    c.wait_ack()
    c.close()
    assert s.stop() == 0


def test_metrics_off_and_busy_port(service, tmp_path):
    s = service("--metrics-listen", "")
    assert s.metrics_port is None and "metrics on" not in s.log()
    assert s.stop() == 0
    # A metrics address that cannot be bound is a runtime failure: exit 1, with the reason.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        p = subprocess.run([str(ATTUNED), "--listen", "127.0.0.1:0", "--db",
                            str(tmp_path / "busy.db"), "--metrics-listen",
                            "127.0.0.1:%d" % port],
                           capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert p.returncode == 1
    assert "cannot listen for metrics on 127.0.0.1:%d" % port in p.stderr, p.stderr


# ---- make install, the unit, the man pages ----------------------------------------------------

def make(*args):
    # A make of our own, not part of the make that runs these tests.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.pop("ATTUNE_LEXICONS", None)
    p = subprocess.run(["make", "-C", str(REPO), "-j2", *args], capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.fixture(scope="module")
def installs(tmp_path_factory):
    """Builds in a build directory of its own, then installs twice: into a DESTDIR with the
    default PREFIX, and into a real PREFIX whose commands are then run from there."""
    root = tmp_path_factory.mktemp("install")
    build = root / "build"
    make("install", "BUILD=%s" % build, "DESTDIR=%s" % (root / "dest"))
    make("install", "BUILD=%s" % build, "PREFIX=%s" % (root / "prefix"))
    return root


def test_install_into_destdir_lays_out_every_file(installs):
    base = installs / "dest" / "usr" / "local"
    for rel in ("bin/attune", "bin/attuned"):
        assert os.access(base / rel, os.X_OK), rel
    for rel in ("share/attune/lexicons/vader/vader_lexicon.txt",
                "share/attune/lexicons/markers/frustration.tsv",
                "share/attune/schema/0001_init.sql",
                "share/attune/config.example.ini",
                "etc/attune/attuned.ini",
                "lib/systemd/system/attuned.service",
                "lib/sysusers.d/attune.conf",
                "share/man/man1/attune.1",
                "share/man/man8/attuned.8"):
        assert (base / rel).is_file(), rel
    assert (base / "share/attune/config.example.ini").read_text() == \
        (REPO / "config.example.ini").read_text()
    unit = (base / "lib/systemd/system/attuned.service").read_text()
    # DESTDIR is a staging root: the installed unit names the final paths.
    assert "ExecStart=/usr/local/bin/attuned --config /usr/local/etc/attune/attuned.ini\n" \
        in unit
    assert str(installs) not in unit


def test_installed_commands_find_the_installed_lexicons(installs, tmp_path):
    prefix = installs / "prefix"
    env = {k: v for k, v in os.environ.items() if k != "ATTUNE_LEXICONS"}
    # Neither the source tree nor prefix/bin/../lexicons: only PREFIX/share/attune/lexicons.
    assert not (prefix / "lexicons").exists()
    p = subprocess.run([str(prefix / "bin" / "attune"), "score"],
                       input='{"speaker":"customer","text":"This is RIDICULOUS, I am furious"}\n',
                       capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert '"sentiment":{"neg":' in p.stdout, p.stdout
    # The ExecStartPre of the installed unit, with the installed configuration.
    ini = prefix / "etc" / "attune" / "attuned.ini"
    p = subprocess.run([str(prefix / "bin" / "attuned"), "-c", str(ini), "--check-config"],
                       capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    installed_id = re.search(r"model (m-[0-9a-f]+)", p.stdout).group(1)
    assert installed_id == model_id_of(REPO / "lexicons")


def test_installed_sqlite_extension_finds_the_installed_lexicons(installs, tmp_path):
    assert (installs / "dest" / "usr/local/lib/attune/attune_sqlite.so").is_file()
    so = installs / "prefix" / "lib" / "attune" / "attune_sqlite.so"
    if not os.path.exists("/usr/bin/sqlite3"):
        pytest.skip("no sqlite3 shell")
    env = {k: v for k, v in os.environ.items() if k != "ATTUNE_LEXICONS"}
    # A sanitizer build (make asan, make tsan) needs its runtimes loaded first into the sqlite3
    # shell.
    ldd = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
    preload = [l.split("=>")[1].split()[0] for l in ldd.splitlines()
               if "=>" in l and ("libasan" in l or "libubsan" in l or "libtsan" in l)]
    if preload:
        env["LD_PRELOAD"] = " ".join(preload)
    p = subprocess.run(["/usr/bin/sqlite3", ":memory:"],
                       input=".load %s\nSELECT attune_model_id();\n" % str(so)[:-3],
                       capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == model_id_of(REPO / "lexicons")


def test_unit_file_verifies_and_says_what_the_service_needs(installs):
    unit_text = (REPO / "packaging" / "attuned.service").read_text()
    settings = {}
    for line in unit_text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, val = line.partition("=")
            settings.setdefault(key, []).append(val)
    assert settings["Type"] == ["notify"]
    assert settings["WatchdogSec"] and settings["NotifyAccess"] == ["main"]
    assert settings["ExecStartPre"][0].endswith("--check-config")
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["User"] == ["attune"] and settings["StateDirectory"] == ["attune"]
    for key, val in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                     ("PrivateTmp", "yes"), ("CapabilityBoundingSet", ""),
                     ("LimitCORE", "0")):
        assert settings[key] == [val], key
    assert "AF_INET" in settings["RestrictAddressFamilies"][0]
    assert settings["SystemCallFilter"][0] == "@system-service"
    # PCRE2's JIT needs writable+executable memory: this must never be switched on.
    assert "MemoryDenyWriteExecute" not in settings

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    prefix = installs / "prefix"
    unit = prefix / "lib" / "systemd" / "system" / "attuned.service"
    assert "ExecStart=%s/bin/attuned" % prefix in unit.read_text()
    # The installed binaries exist, and the installed attuned(8) satisfies Documentation=.
    env = dict(os.environ, MANPATH=str(prefix / "share" / "man"))
    p = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 0 and not p.stderr.strip() and not p.stdout.strip(), \
        p.stdout + p.stderr


def test_bench_config_writes_out_the_daemons_defaults():
    # bench/ingest.ini says its [store] batch keys are the daemon's defaults, so that the bench
    # measures the daemon as shipped: they must equal config.example.ini's.
    import configparser
    ex = configparser.ConfigParser(inline_comment_prefixes=(";",))
    bench = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ex.read(REPO / "config.example.ini")
    bench.read(REPO / "bench" / "ingest.ini")
    for key in ("batch_rows", "batch_ms"):
        assert bench["store"][key] == ex["store"][key], key


def roff_text(path):
    return path.read_text().replace("\\-", "-").replace("\\&", "")


def test_man_pages_document_every_flag_key_signal_and_exit_code():
    page = roff_text(REPO / "packaging" / "man" / "attuned.8")
    usage = subprocess.run([str(ATTUNED), "--help"], capture_output=True, text=True).stdout
    flags = set(re.findall(r"--[a-z][a-z-]+", usage))
    assert {"--config", "--metrics-listen", "--check-config"} <= flags
    for flag in flags | {"--help", "--version"}:
        assert flag in page, flag
    keys = set()
    section = None
    for line in (REPO / "config.example.ini").read_text().splitlines():
        m = re.match(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            assert ".SS [%s]" % section in page, section
        m = re.match(r"(\w+) =", line)
        if m:
            keys.add((section, m.group(1)))
    assert len(keys) >= 18
    for section, key in keys:
        part = page.split(".SS [%s]" % section, 1)[1].split(".SS ", 1)[0]
        assert "\n.B %s\n" % key in part, (section, key)
    for word in ("SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE", "READY=1", "RELOADING=1",
                 "STOPPING=1", "WATCHDOG=1", "/metrics", "/healthz", "MemoryDenyWriteExecute"):
        assert word in page, word
    exit_section = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    for code in ("0", "1", "2", "3"):
        assert "\n.B %s\n" % code in exit_section, code

    page = roff_text(REPO / "packaging" / "man" / "attune.1")
    for cmd in ("score", "explain", "eval", "version", "help"):
        assert ".B %s" % cmd in page or ".BR %s" % cmd in page, cmd
    for flag in ("--speaker", "--text", "--lexicons", "--errors", "--format", "--min-f1",
                 "--help", "ATTUNE_LEXICONS"):
        assert flag in page, flag

    groff = shutil.which("groff")
    if groff:
        for name in ("attuned.8", "attune.1"):
            p = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z",
                                str(REPO / "packaging" / "man" / name)],
                               capture_output=True, text=True)
            assert p.returncode == 0 and not p.stderr, (name, p.stderr)

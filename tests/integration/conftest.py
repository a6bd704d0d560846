"""Fixtures for the integration tests of attuned: the real daemon on 127.0.0.1 (port 0) with a
real SQLite file in a temporary directory, and a small line-protocol client.

    def test_x(attuned):
        d = attuned(store_text="full", batch_ms=5)   # any INI key of config.example.ini
        c = d.connect()
        n = c.send({"type": "ping"})
        ...

Every daemon a test started is stopped at teardown with SIGTERM; the teardown asserts exit code
0 and that `PRAGMA integrity_check` of its database is "ok".
"""
import json
import os
import pathlib
import re
import signal
import socket
import sqlite3
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("ATTUNE_BUILD", REPO / "build"))
ATTUNED = BUILD / "attuned"

# The INI section of each key a test may set (config.example.ini).
SECTIONS = {
    "max_connections": "server", "max_line_bytes": "server", "idle_timeout_ms": "server",
    "line_timeout_ms": "server", "drain_timeout_ms": "server",
    "auth_token": "server", "client_queue_bytes": "server",
    "store_text": "store", "batch_rows": "store", "batch_ms": "store",
    "lexicons": "scoring", "workers": "scoring", "queue_lines": "scoring",
    "level": "log", "file": "log",
    "silence_threshold_ms": "analytics",
    "compound_floor": "alerts", "consecutive_turns": "alerts", "subscriber_queue": "alerts",
}

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes seconds (load, crash, backpressure)")


def db_connect(path):
    """A second connection to the daemon's database, as an analyst would open one."""
    con = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    con.row_factory = sqlite3.Row
    return con


def query(path, sql, params=()):
    con = db_connect(path)
    try:
        return [tuple(r) for r in con.execute(sql, params).fetchall()]
    finally:
        con.close()


def query_dicts(path, sql, params=()):
    con = db_connect(path)
    try:
        return [dict(r) for r in con.execute(sql, params).fetchall()]
    finally:
        con.close()


def refuse_seq(path, seq):
    """Adds a trigger (as an analyst might) that makes SQLite refuse the utterance with seq."""
    con = db_connect(path)
    try:
        con.execute("CREATE TRIGGER refuse BEFORE INSERT ON utterances WHEN NEW.seq = %d "
                    "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END" % seq)
    finally:
        con.close()


def integrity_ok(path):
    con = sqlite3.connect(str(path), timeout=10)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        con.close()


class Daemon:
    """One run of build/attuned. start() waits for its "listening on" log line."""

    def __init__(self, workdir, db, config, extra_args=()):
        self.workdir = pathlib.Path(workdir)
        self.db = pathlib.Path(db)
        self.config = dict(config)
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None
        self.returncode = None
        self.log_path = None

    def _write_ini(self, path):
        sections = {"metrics": {"listen": ""}}  # no metrics port: tests may run side by side
        for key, value in self.config.items():
            if "." in key:
                section, key = key.split(".", 1)
            else:
                section = SECTIONS[key]
            if isinstance(value, bool):
                value = "true" if value else "false"
            sections.setdefault(section, {})[key] = value
        with open(path, "w") as f:
            for section, keys in sections.items():
                f.write("[%s]\n" % section)
                for key, value in keys.items():
                    f.write("%s = %s\n" % (key, value))
                f.write("\n")

    def start(self, timeout=20):
        assert ATTUNED.exists(), "build the daemon first (make all): %s" % ATTUNED
        n = len(list(self.workdir.glob("attuned-*.log")))
        self.log_path = self.workdir / ("attuned-%d.log" % n)
        ini = self.workdir / ("attuned-%d.ini" % n)
        self._write_ini(ini)
        args = [str(ATTUNED), "-c", str(ini), "--listen", "127.0.0.1:0", "--db", str(self.db)]
        args += self.extra_args
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, cwd=str(self.workdir))
        self.returncode = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTENING.search(self.log())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise AssertionError("attuned exited with %d before listening:\n%s"
                                     % (self.proc.returncode, self.log()))
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError("attuned did not log 'listening on' within %ss:\n%s"
                             % (timeout, self.log()))

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout=30):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("attuned did not exit within %ss:\n%s" % (timeout,
                                                                          self.log()[-4000:]))
        self._log.close()
        return self.returncode

    def stop(self, timeout=30):
        """SIGTERM, then wait; returns the exit code."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        return self.wait()

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)

    def connect(self, **kw):
        return Client(self.port, **kw)

    def rows(self, sql, params=()):
        return query(self.db, sql, params)

    def dicts(self, sql, params=()):
        return query_dicts(self.db, sql, params)


class Closed(Exception):
    """The server closed the connection."""


class Client:
    """A protocol client: numbered lines out, parsed JSON replies in."""

    def __init__(self, port, timeout=10, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.lines = 0          # lines sent on this connection so far
        self.acked = 0          # highest ack.through seen
        self.messages = []      # every message received, in order
        self.eof = False

    # -- sending --------------------------------------------------------------------------
    @staticmethod
    def encode(msg):
        if isinstance(msg, (dict, list)):
            return json.dumps(msg, separators=(",", ":")).encode()
        if isinstance(msg, str):
            return msg.encode()
        return bytes(msg)

    def send(self, *msgs):
        """Sends each message as one line (pipelined, one write). Returns the last line's
        number on this connection."""
        data = b"".join(self.encode(m) + b"\n" for m in msgs)
        self.sock.sendall(data)
        self.lines += len(msgs)
        return self.lines

    def send_raw(self, data):
        """Sends bytes as they are; every newline in them ends a line."""
        self.sock.sendall(data)
        self.lines += data.count(b"\n")
        return self.lines

    # -- receiving ------------------------------------------------------------------------
    def recv(self, timeout=10):
        """The next message, or raises TimeoutError; raises Closed at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                raise Closed("connection closed by the server")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply within %ss" % timeout)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError("no reply within %ss" % timeout) from None
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                continue
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        assert isinstance(msg, dict), line
        self.messages.append(msg)
        if msg.get("type") == "ack":
            assert msg["through"] >= self.acked, "acks must not go backwards: %s after %d" % (
                msg, self.acked)
            assert msg["through"] <= self.lines, "ack beyond the lines sent: %s" % msg
            self.acked = msg["through"]
        return msg

    def recv_type(self, type_, timeout=10):
        """Reads until a message of type_; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg.get("type") == type_:
                return msg

    def wait_ack(self, through=None, timeout=15):
        """Reads until an ack covers line `through` (default: every line sent). Returns the
        other messages read meanwhile."""
        through = self.lines if through is None else through
        others = []
        deadline = time.monotonic() + timeout
        while self.acked < through:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no ack through %d within %ss (acked %d; got %s)"
                                   % (through, timeout, self.acked, others[-5:]))
            msg = self.recv(left)
            if msg.get("type") != "ack":
                others.append(msg)
        return others

    def quiet(self, seconds):
        """Reads for `seconds`; returns what arrived (the connection may stay silent)."""
        got = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                got.append(self.recv(left))
            except TimeoutError:
                return got

    def expect_closed(self, timeout=10):
        """Reads until the server closes the connection; returns what arrived before."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got.append(self.recv(max(0.01, deadline - time.monotonic())))
            except Closed:
                return got
            except TimeoutError:
                raise AssertionError("the server did not close the connection within %ss; got %s"
                                     % (timeout, got)) from None

    def poll(self):
        """Reads what has arrived, without waiting; returns the complete messages. Raises
        Closed at EOF."""
        self.sock.settimeout(0)
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                break
            self.buf += data
        got = []
        while b"\n" in self.buf:
            got.append(self.recv(0.01))
        if not got and self.eof:
            raise Closed("connection closed by the server")
        return got

    def errors(self):
        return [m for m in self.messages if m.get("type") == "error"]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def attuned(tmp_path):
    """Starts attuned with the given INI keys; `db=` reuses a database (restarts)."""
    started = []

    def start(db=None, extra_args=(), **config):
        d = Daemon(tmp_path, db or tmp_path / "attune.db", config, extra_args)
        d.start()
        started.append(d)
        return d

    yield start
    failures = []
    for d in started:
        if d.running():
            rc = d.stop()
            if rc != 0:
                failures.append("attuned exited with %s on SIGTERM:\n%s" % (rc, d.log()[-4000:]))
    for db in {d.db for d in started}:
        if db.exists():
            integrity_ok(db)
    assert not failures, failures


@pytest.fixture
def daemon(attuned):
    """A daemon with default settings except full text storage."""
    return attuned(store_text="full")


def utt(cid, seq=None, speaker="customer", text="hello there", **kw):
    """An utterance line."""
    m = {"type": "utterance", "conversation_id": cid, "speaker": speaker, "text": text}
    if seq is not None:
        m["seq"] = seq
    m.update(kw)
    return m

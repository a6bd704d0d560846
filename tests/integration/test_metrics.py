"""Per-conversation metrics stored by attuned (ANALYTICS.md section 2)."""
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

METRIC_COLUMNS = [
    "turns", "agent_turns", "customer_turns", "duration_ms", "first_response_ms",
    "avg_response_ms", "max_response_ms", "customer_sentiment_q1", "customer_sentiment_q2",
    "customer_sentiment_q3", "customer_sentiment_q4", "customer_sentiment_start",
    "customer_sentiment_end", "customer_sentiment_min", "customer_sentiment_mean",
    "sentiment_trend", "empathy_opportunities", "empathy_responses", "empathy_response_rate",
    "solution_before_acknowledgement", "empathy_score", "frustration_peak", "frustration_end",
    "recovery", "escalation_requested", "churn_threat", "legal_threat", "abuse",
    "interruptions_agent", "interruptions_customer", "talk_ratio_agent", "silence_ms",
    "resolved", "resolution_ms", "csat", "nps", "escalated", "transferred", "ended",
]


class Daemon:
    def __init__(self, tmp_path):
        self.db = tmp_path / "attune.db"
        self.proc = subprocess.Popen(
            [str(BUILD / "attuned"), "--listen", "127.0.0.1:0", "--db", str(self.db)],
            stderr=subprocess.PIPE, text=True, cwd=REPO)
        deadline = time.time() + 20
        self.port = None
        while time.time() < deadline and self.port is None:
            line = self.proc.stderr.readline()
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        assert self.port, "attuned did not start"

    def send(self, messages):
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as s:
            f = s.makefile("rw")
            for m in messages:
                f.write(json.dumps(m) + "\n")
            f.flush()
            n = len(messages)
            while True:
                reply = json.loads(f.readline())
                assert reply["type"] != "error", reply
                if reply["type"] == "ack" and reply["through"] >= n:
                    return

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0

    def row(self, conversation_id):
        con = sqlite3.connect(self.db)
        con.row_factory = sqlite3.Row
        r = con.execute("select * from conversations where conversation_id = ?",
                        (conversation_id,)).fetchone()
        con.close()
        return {c: r[c] for c in METRIC_COLUMNS}


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    if d.proc.poll() is None:
        d.stop()


CHAT = [
    {"speaker": "customer", "ts": 1000, "text": "This is ridiculous, I want to speak to a manager!"},
    {"speaker": "agent", "ts": 31000, "text": "I'm so sorry about this. Let me fix that for you."},
    {"speaker": "customer", "ts": 40000, "text": "ok, thanks"},
    {"speaker": "agent", "ts": 41000, "text": "You're welcome, is there anything else?"},
    {"speaker": "customer", "ts": 50000, "text": "no that's great, thank you so much"},
]

VOICE = [
    {"speaker": "customer", "start_ms": 0, "end_ms": 4000, "text": "my internet keeps dropping"},
    {"speaker": "agent", "start_ms": 3500, "end_ms": 9000, "text": "I understand, let me check"},
    {"speaker": "customer", "start_ms": 8000, "end_ms": 10000, "text": "it's been a week"},
    {"speaker": "agent", "start_ms": 15000, "end_ms": 20000, "text": "I've reset the line now"},
]


def whole(cid, turns, outcome=None, **meta):
    m = {"type": "conversation", "conversation_id": cid, "turns": turns, **meta}
    if outcome:
        m["outcome"] = outcome
    return m


def streamed(cid, turns, outcome=None, **meta):
    out = [{"type": "start", "conversation_id": cid, **meta}]
    out += [dict(t, type="utterance", conversation_id=cid, seq=i) for i, t in enumerate(turns)]
    out.append(dict({"type": "end", "conversation_id": cid}, **(outcome or {})))
    return out


@pytest.mark.parametrize("turns", [CHAT, VOICE], ids=["chat", "voice"])
def test_streamed_and_whole_give_identical_rows(daemon, turns):
    outcome = {"resolved": True, "resolved_at": 120000, "csat": 4, "nps": 9}
    daemon.send([whole("w", turns, outcome, started_at=0, channel="chat")])
    daemon.send(streamed("s", turns, outcome, started_at=0, channel="chat"))
    w, s = daemon.row("w"), daemon.row("s")
    assert w == s
    assert w["turns"] == len(turns)
    assert w["ended"] == 1


def test_chat_metrics_by_hand(daemon):
    daemon.send([whole("c", CHAT, {"resolved": True, "resolved_at": 90000}, started_at=0)])
    m = daemon.row("c")
    assert (m["turns"], m["agent_turns"], m["customer_turns"]) == (5, 2, 3)
    assert m["first_response_ms"] == 30000
    assert m["avg_response_ms"] == pytest.approx((30000 + 1000) / 2)
    assert m["max_response_ms"] == 30000
    assert m["duration_ms"] == 49000  # no ended_at: last turn time - first turn time
    assert m["empathy_opportunities"] >= 1  # the angry first turn
    assert m["escalation_requested"] == 1 and m["escalated"] == 1
    assert m["resolution_ms"] == 90000
    # Voice metrics are NULL for a chat, not zero.
    for col in ("interruptions_agent", "interruptions_customer", "talk_ratio_agent",
                "silence_ms"):
        assert m[col] is None


def test_voice_metrics_by_hand(daemon):
    daemon.send([whole("v", VOICE, started_at=0, channel="voice")])
    m = daemon.row("v")
    assert m["interruptions_agent"] == 1
    assert m["interruptions_customer"] == 1
    assert m["silence_ms"] == 5000  # 15000 - 10000, over the 3000 ms threshold
    assert m["talk_ratio_agent"] == pytest.approx(10500 / (4000 + 5500 + 2000 + 5000))
    # No outcome yet: NULL, never zero.
    assert m["resolved"] is None and m["resolution_ms"] is None and m["csat"] is None


def test_late_outcome_updates_metrics(daemon):
    daemon.send([whole("late", CHAT, started_at=0)])
    assert daemon.row("late")["resolution_ms"] is None
    daemon.send([{"type": "outcome", "conversation_id": "late", "resolved": True,
                  "resolved_at": 100000, "csat": 2}])
    m = daemon.row("late")
    assert m["resolution_ms"] == 100000 and m["csat"] == 2 and m["resolved"] == 1


def test_no_opportunity_rate_is_null(daemon):
    calm = [{"speaker": "customer", "ts": 0, "text": "hello, I'd like to update my address"},
            {"speaker": "agent", "ts": 5000, "text": "Sure, happy to help with that."}]
    daemon.send([whole("calm", calm)])
    m = daemon.row("calm")
    assert m["empathy_opportunities"] == 0
    assert m["empathy_response_rate"] is None


def test_streamed_turns_update_metrics_without_an_end(daemon):
    # Metrics of a conversation still in progress are recomputed at most once a second (so a
    # long conversation does not cost the square of its length), but they do catch up.
    for i in range(40):
        daemon.send([{"type": "utterance", "conversation_id": "live", "seq": i,
                      "speaker": "customer" if i % 2 == 0 else "agent", "ts": 1000 * i,
                      "text": "turn %d" % i}])
    deadline = time.time() + 5
    while time.time() < deadline and daemon.row("live")["turns"] != 40:
        time.sleep(0.1)
    m = daemon.row("live")
    assert m["turns"] == 40 and m["customer_turns"] == 20
    assert m["ended"] == 0


@pytest.mark.parametrize("restart", [False, True], ids=["warm", "restarted"])
def test_metrics_of_turns_stored_over_many_batches(daemon, tmp_path, restart):
    # The writer keeps a conversation's stored turns in memory between recomputations. Turns
    # arriving over many transactions, out of order, resent, or numbered by the server (and,
    # restarted, with nothing in memory) must still give the row of the conversation sent whole.
    def utt(seq, t):
        m = dict(t, type="utterance", conversation_id="many")
        if seq is not None:
            m["seq"] = seq
        return m
    turns = CHAT[:4]
    daemon.send([{"type": "start", "conversation_id": "many", "started_at": 0}])
    daemon.send([utt(2, turns[2]), utt(0, turns[0])])
    if restart:
        daemon.stop()
        daemon = Daemon(tmp_path)
    try:
        daemon.send([utt(0, turns[0]), utt(1, turns[1]), utt(2, turns[2])])
        daemon.send([utt(None, turns[3])])
        daemon.send([{"type": "end", "conversation_id": "many", "resolved": True}])
        daemon.send([whole("once", turns, {"resolved": True}, started_at=0)])
        many, once = daemon.row("many"), daemon.row("once")
        assert many == once
        assert many["turns"] == 4
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()

"""`attune rescore`: stored utterances scored again with changed lexicons, offline (no daemon:
rescore takes the database's writer lock itself) and through a running attuned (which holds the
lock, so rescore asks it with a `rescore` line). Checked against what lands in SQLite: markers,
model ids, every section-2 metric, and against a fresh daemon that scored the same
conversations with the new lexicons from the start.
"""
import fcntl
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import BUILD, REPO, Daemon, query, query_dicts
from test_metrics import METRIC_COLUMNS

ATTUNE = BUILD / "attune"

# A pattern the shipped lexicons do not have: "glorbish" becomes an escalation request.
NEW_RULE = "fru-test-glorbish\tmatch\tescalation_request\t*\t\\bglorbish\\b\n"

# Every column of conversations that the metrics computation writes (ANALYTICS.md section 2).
METRICS = [c for c in METRIC_COLUMNS if c != "ended"]

UTTERANCE_SCORES = ["conversation_id", "seq", "speaker", "neg", "neu", "pos", "compound",
                    "frustration_score", "category_mask", "solution_first", "model_id"]


def conversations():
    """Protocol lines: c-glorb mentions the new word; c-plain does not."""
    return [
        {"type": "conversation", "conversation_id": "c-glorb", "channel": "chat",
         "queue": "billing", "agent_id": "a-1", "customer_id": "u-1",
         "started_at": "2026-11-20T10:00:00Z",
         "turns": [
             {"speaker": "customer", "ts": "2026-11-20T10:00:05Z",
              "text": "My router is glorbish again and I am fed up with it!"},
             {"speaker": "agent", "ts": "2026-11-20T10:00:40Z",
              "text": "Let me fix that for you right now."},
             {"speaker": "customer", "ts": "2026-11-20T10:01:30Z",
              "text": "Still glorbish. This is the third time I have called."},
             {"speaker": "agent", "ts": "2026-11-20T10:02:00Z",
              "text": "I am so sorry, that must be really frustrating."},
         ],
         "outcome": {"resolved": True, "resolved_at": "2026-11-20T10:05:00Z", "csat": 3}},
        {"type": "conversation", "conversation_id": "c-plain", "channel": "chat",
         "queue": "tech", "agent_id": "a-2", "customer_id": "u-2",
         "started_at": "2026-11-24T09:00:00Z",
         "turns": [
             {"speaker": "customer", "ts": "2026-11-24T09:00:03Z",
              "text": "Hi, I would like to update my address please."},
             {"speaker": "agent", "ts": "2026-11-24T09:00:20Z",
              "text": "Of course, thank you for your patience while I update it."},
         ]},
        {"type": "start", "conversation_id": "c-live", "started_at": "2026-11-25T08:00:00Z"},
        {"type": "utterance", "conversation_id": "c-live", "seq": 0, "speaker": "customer",
         "text": "The app is glorbish, calm down everyone."},
        {"type": "utterance", "conversation_id": "c-live", "seq": 1, "speaker": "agent",
         "text": "Calm down, that's our policy."},
    ]


N_UTTERANCES = 4 + 2 + 2


@pytest.fixture
def lexicons(tmp_path):
    """A private copy of lexicons/ that a test may change."""
    d = tmp_path / "lexicons"
    shutil.copytree(REPO / "lexicons", d)
    return d


def add_rule(lexdir):
    with open(lexdir / "markers" / "frustration.tsv", "a") as f:
        f.write(NEW_RULE)


def store(d, lines):
    c = d.connect()
    c.send(*lines)
    c.wait_ack()
    assert not c.errors(), c.errors()
    c.close()


def rescore(*args, env=None, timeout=120):
    """Runs attune rescore --json; returns (exit code, parsed stdout or None, stderr)."""
    e = dict(os.environ)
    e.pop("ATTUNE_TOKEN", None)
    e.update(env or {})
    p = subprocess.run([str(ATTUNE), "rescore", "--json", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, env=e)
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, out, p.stderr


def snapshot(db):
    return {
        "utterances": query_dicts(db, "SELECT %s FROM utterances ORDER BY conversation_id, seq"
                                  % ", ".join(UTTERANCE_SCORES)),
        "markers": query(db, "SELECT conversation_id, seq, ordinal, family, category, pattern,"
                         " start_byte, end_byte FROM markers ORDER BY 1, 2, 3"),
        "metrics": {r["conversation_id"]: r for r in query_dicts(
            db, "SELECT conversation_id, %s FROM conversations" % ", ".join(METRICS))},
    }


def approx_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], float) or isinstance(b[k], float):
            assert a[k] == pytest.approx(b[k], abs=1e-9), k
        else:
            assert a[k] == b[k], k


def model_ids(db):
    return {r[0] for r in query(db, "SELECT DISTINCT model_id FROM utterances")}


def test_offline_rescore_applies_changed_rules_to_past_conversations(attuned, lexicons,
                                                                     tmp_path):
    d = attuned(store_text="full", lexicons=str(lexicons))
    store(d, conversations())
    assert d.stop() == 0
    before = snapshot(d.db)
    (old_model,) = model_ids(d.db)
    assert not any(m[5] == "fru-test-glorbish" for m in before["markers"])
    assert before["metrics"]["c-glorb"]["escalation_requested"] == 0

    add_rule(lexicons)
    rc, out, err = rescore("--db", d.db, "--lexicons", lexicons)
    assert rc == 0, err
    assert out["via"] == "offline"
    assert out["utterances"] == N_UTTERANCES
    assert out["conversations"] == 3
    assert out["skipped"] == 0
    new_model = out["model_id"]
    assert new_model != old_model
    assert model_ids(d.db) == {new_model}

    after = snapshot(d.db)
    glorb = [m for m in after["markers"] if m[5] == "fru-test-glorbish"]
    # customer turns only: the agent turn of c-live does not say it, and agent turns never get
    # frustration markers.
    assert [(m[0], m[1], m[4]) for m in glorb] == [
        ("c-glorb", 0, "escalation_request"), ("c-glorb", 2, "escalation_request"),
        ("c-live", 0, "escalation_request")]
    text0 = "My router is glorbish again and I am fed up with it!"
    assert (glorb[0][6], glorb[0][7]) == (text0.index("glorbish"),
                                           text0.index("glorbish") + len("glorbish"))
    # Markers that the change does not touch are stored again as they were.
    old_markers = {(m[0], m[1], m[5], m[6], m[7]) for m in before["markers"]}
    new_markers = {(m[0], m[1], m[5], m[6], m[7]) for m in after["markers"]}
    assert new_markers - old_markers == {(m[0], m[1], m[5], m[6], m[7]) for m in glorb}
    assert old_markers <= new_markers

    esc_bit = 1 << 15  # escalation_request (schema/README.md bit order)
    masks = {(u["conversation_id"], u["seq"]): u["category_mask"] for u in after["utterances"]}
    for key in [("c-glorb", 0), ("c-glorb", 2), ("c-live", 0)]:
        assert masks[key] & esc_bit
    m = after["metrics"]["c-glorb"]
    assert m["escalation_requested"] == 1 and m["escalated"] == 1
    assert after["metrics"]["c-live"]["escalation_requested"] == 1
    approx_equal(after["metrics"]["c-plain"], before["metrics"]["c-plain"])
    # Sentiment does not depend on marker patterns.
    for a, b in zip(before["utterances"], after["utterances"]):
        for k in ("neg", "neu", "pos", "compound"):
            assert a[k] == b[k]

    # Exactly what a daemon with the new lexicons stores for the same conversations.
    fresh = attuned(db=tmp_path / "fresh.db", store_text="full", lexicons=str(lexicons))
    store(fresh, conversations())
    assert fresh.stop() == 0
    want = snapshot(fresh.db)
    assert after["markers"] == want["markers"]
    for a, b in zip(after["utterances"], want["utterances"]):
        approx_equal(a, b)
    for cid in want["metrics"]:
        approx_equal(after["metrics"][cid], want["metrics"][cid])

    # A second run finds nothing to do and changes nothing.
    rc, out, err = rescore("--db", d.db, "--lexicons", lexicons)
    assert rc == 0, err
    assert (out["utterances"], out["conversations"], out["skipped"]) == (0, 0, 0)
    assert snapshot(d.db) == after

    # The lock was released: the daemon starts on the database again, with the new model.
    d2 = attuned(db=d.db, store_text="full", lexicons=str(lexicons))
    assert d2.running()


def test_rescore_resumes_where_an_earlier_run_stopped(attuned, lexicons):
    d = attuned(store_text="full", lexicons=str(lexicons))
    store(d, conversations())
    assert d.stop() == 0
    add_rule(lexicons)
    # A run limited to recent conversations does part of the work ...
    rc, out, err = rescore("--db", d.db, "--lexicons", lexicons, "--since", "2026-11-24")
    assert rc == 0, err
    assert (out["utterances"], out["conversations"]) == (4, 2)  # c-plain, c-live
    by_conv = dict(query(d.db, "SELECT conversation_id, COUNT(DISTINCT model_id) || ':' ||"
                         " MIN(model_id) FROM utterances GROUP BY 1"))
    assert by_conv["c-plain"].endswith(out["model_id"])
    assert not by_conv["c-glorb"].endswith(out["model_id"])
    # ... and a full run (one utterance per transaction) does only the rest.
    rc, out2, err = rescore("--db", d.db, "--lexicons", lexicons, "--batch", "1")
    assert rc == 0, err
    assert (out2["utterances"], out2["conversations"]) == (4, 1)
    assert model_ids(d.db) == {out["model_id"]}


def test_since_accepts_dates_times_and_milliseconds(attuned, lexicons):
    d = attuned(store_text="full", lexicons=str(lexicons))
    store(d, conversations())
    assert d.stop() == 0
    add_rule(lexicons)
    rc, out, _ = rescore("--db", d.db, "--lexicons", lexicons, "--since",
                         "2026-11-25T07:59:59.999+00:00")
    assert (rc, out["utterances"], out["conversations"]) == (0, 2, 1)
    ms = 1764000000000  # 2025-11-24T16:00:00Z: before every conversation
    rc, out, _ = rescore("--db", d.db, "--lexicons", lexicons, "--since", ms)
    assert (rc, out["utterances"], out["conversations"]) == (0, 6, 2)
    for bad in ("yesterday", "2026-13-01", "2460000.5"):
        rc, out, err = rescore("--db", d.db, "--since", bad)
        assert rc == 2 and out is None and "--since" in err, (bad, err)


def test_utterances_without_their_text_are_skipped_and_counted(attuned, lexicons, tmp_path):
    none = attuned(db=tmp_path / "none.db", store_text="none", lexicons=str(lexicons))
    store(none, conversations())
    assert none.stop() == 0
    redacted = attuned(db=tmp_path / "red.db", store_text="redacted", lexicons=str(lexicons))
    store(redacted, [
        {"type": "utterance", "conversation_id": "r-1", "seq": 0, "speaker": "customer",
         "text": "It is glorbish, write to me at jo.bloggs@example.com"},
        {"type": "utterance", "conversation_id": "r-1", "seq": 1, "speaker": "customer",
         "text": "Still glorbish, nothing secret here."},
    ])
    assert redacted.stop() == 0
    add_rule(lexicons)

    before = snapshot(none.db)
    rc, out, err = rescore("--db", none.db, "--lexicons", lexicons)
    assert rc == 0, err
    assert (out["utterances"], out["conversations"], out["skipped"]) == (0, 0, N_UTTERANCES)
    assert snapshot(none.db) == before
    p = subprocess.run([str(ATTUNE), "rescore", "--db", str(none.db), "--lexicons",
                        str(lexicons)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[1].startswith("%d utterances keep their old scores"
                                               % N_UTTERANCES), p.stdout

    # A redacted text cannot be scored as it was (its offsets refer to the original): only the
    # turn that redaction left unchanged is rescored.
    stored = query(redacted.db, "SELECT text FROM utterances ORDER BY seq")
    rc, out, err = rescore("--db", redacted.db, "--lexicons", lexicons)
    assert rc == 0, err
    if stored[0][0] is None:
        # A daemon that keeps no text under store_text = redacted: nothing can be rescored.
        assert stored[1][0] is None
        assert (out["utterances"], out["conversations"], out["skipped"]) == (0, 0, 2)
        return
    assert "[EMAIL]" in stored[0][0] and stored[1][0] == "Still glorbish, nothing secret here."
    assert (out["utterances"], out["conversations"], out["skipped"]) == (1, 1, 1)
    rows = query(redacted.db, "SELECT seq, model_id FROM utterances ORDER BY seq")
    assert rows[0][1] != out["model_id"] and rows[1][1] == out["model_id"]
    assert query(redacted.db, "SELECT seq FROM markers WHERE pattern = 'fru-test-glorbish'") \
        == [(1,)]


def test_rescore_through_the_running_daemon(attuned, lexicons):
    d = attuned(store_text="full", lexicons=str(lexicons), batch_rows=2)
    store(d, conversations())
    (old_model,) = model_ids(d.db)

    # The daemon holds the database: rescoring with other lexicons is refused ...
    add_rule(lexicons)
    rc, out, err = rescore("--db", d.db, "--lexicons", lexicons)
    assert rc == 1 and out is None
    assert "attuned holds" in err and "SIGHUP" in err, err

    # ... until the daemon itself has the new model; then it does the work, found through the
    # address in its lock file.
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "replaces" not in d.log():
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    rc, out, err = rescore("--db", d.db)
    assert rc == 0, err
    assert out["via"] == "daemon"
    assert (out["utterances"], out["conversations"], out["skipped"]) == (N_UTTERANCES, 3, 0)
    assert out["model_id"] != old_model and model_ids(d.db) == {out["model_id"]}
    assert query(d.db, "SELECT COUNT(*) FROM markers WHERE pattern = 'fru-test-glorbish'") \
        == [(3,)]
    assert query(d.db, "SELECT escalation_requested, escalated FROM conversations"
                 " WHERE conversation_id = 'c-glorb'") == [(1, 1)]

    # Ingest goes on meanwhile, and a repeated request (explicit address) does nothing.
    store(d, [{"type": "utterance", "conversation_id": "c-glorb", "seq": 4,
               "speaker": "customer", "text": "glorbish!"}])
    rc, out, err = rescore("--db", d.db, "--connect", "127.0.0.1:%d" % d.port)
    assert rc == 0, err
    assert (out["utterances"], out["conversations"]) == (0, 0)
    # The metrics of a conversation that only received an utterance catch up within a second
    # (attuned throttles their recomputation).
    deadline = time.monotonic() + 5
    while query(d.db, "SELECT turns FROM conversations WHERE conversation_id = 'c-glorb'") \
            != [(5,)]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_rescore_protocol_line(attuned):
    d = attuned(store_text="full")
    store(d, conversations())
    c = d.connect()
    c.send({"type": "rescore", "id": 7}, {"type": "rescore", "since": "not a time"})
    c.wait_ack()
    # The bad line is answered at once, the other when its run is done.
    replies = sorted((m for m in c.messages if m["type"] != "ack"), key=lambda m: m["line"])
    assert replies[0] == {"type": "rescored", "line": 1, "model_id": replies[0]["model_id"],
                          "utterances": 0, "conversations": 0, "skipped": 0, "id": 7}
    assert replies[1]["type"] == "error" and replies[1]["line"] == 2
    assert replies[1]["code"] == "bad_field" and "since" in replies[1]["message"]
    # Two at once: the second finds the first running (overloaded) or done.
    seen = len(c.messages)
    c.send({"type": "rescore", "since": "2026-11-25T00:00:00Z"}, {"type": "rescore"})
    c.wait_ack()
    first, second = sorted((m for m in c.messages[seen:] if m["type"] != "ack"),
                           key=lambda m: m["line"])
    assert first["type"] == "rescored" and first["line"] == 3
    assert second["line"] == 4
    assert second["type"] == "rescored" or (
        second["code"] == "overloaded" and "already running" in second["message"]), second
    c.close()


def test_shutdown_stops_a_running_rescore_which_resumes_later(attuned, lexicons):
    d = attuned(store_text="full", lexicons=str(lexicons), batch_rows=1)
    lines = [{"type": "conversation", "conversation_id": "bulk-%03d" % i,
              "turns": [{"speaker": "customer", "text": "glorbish thing number %d" % j}
                        for j in range(10)]} for i in range(150)]
    store(d, lines)
    assert d.stop() == 0
    add_rule(lexicons)
    d = attuned(db=d.db, store_text="full", lexicons=str(lexicons), batch_rows=1)
    c = d.connect()
    c.send({"type": "rescore"})
    time.sleep(0.2)
    d.proc.send_signal(signal.SIGTERM)
    got = c.expect_closed(timeout=30)
    assert d.wait() == 0, d.log()
    reply = [m for m in got if m["type"] != "ack"]
    assert len(reply) == 1 and got[-1] == {"type": "ack", "through": 1}, got
    by_model = dict(query(d.db, "SELECT model_id, COUNT(*) FROM utterances GROUP BY 1"))
    # Offline, the rest is done and nothing twice.
    rc, out, err = rescore("--db", d.db, "--lexicons", lexicons)
    assert rc == 0, err
    n_done = by_model.get(out["model_id"], 0)
    if reply[0]["type"] == "error":
        assert reply[0]["code"] == "shutting_down", reply
        assert n_done < 1500
    else:
        assert reply[0]["utterances"] == n_done == 1500
    assert out["utterances"] == 1500 - n_done
    assert query(d.db, "SELECT COUNT(*) FROM markers WHERE pattern = 'fru-test-glorbish'") \
        == [(1500,)]


def test_daemon_refuses_a_database_that_rescore_holds(tmp_path):
    db = tmp_path / "held.db"
    lock = open(str(db) + "-attuned.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.write("pid %d\nlisten \n" % os.getpid())
    lock.flush()
    try:
        d = Daemon(tmp_path, db, {"store_text": "full"})
        with pytest.raises(AssertionError, match="exited with 1"):
            d.start(timeout=10)
        assert "already has a writer" in d.log() and "pid %d" % os.getpid() in d.log()
        # And rescore, finding the lock held and no daemon to ask, says what to do.
        db.touch()
        rc, out, err = rescore("--db", db, "--connect", "127.0.0.1:1")
        assert rc == 1 and "cannot connect" in err and "--connect" in err, err
    finally:
        lock.close()


def test_rescore_refuses_what_it_cannot_do(tmp_path, attuned):
    rc, out, err = rescore("--db", tmp_path / "missing.db")
    assert rc == 1 and "no database" in err
    rc, out, err = rescore("--batch", "0")
    assert rc == 2 and "--batch" in err
    # A database from a newer attuned is left alone.
    d = attuned(store_text="full")
    store(d, conversations()[:1])
    assert d.stop() == 0
    con = sqlite3.connect(str(d.db))
    (version,) = con.execute("PRAGMA user_version").fetchone()
    con.execute("PRAGMA user_version = 99")
    con.commit()
    rc, out, err = rescore("--db", d.db)
    assert rc == 1 and "newer" in err, err
    con.execute("PRAGMA user_version = %d" % version)
    con.commit()
    con.close()

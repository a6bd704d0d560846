"""attuned: every message type and field of PROTOCOL.md, and what lands in SQLite."""
import datetime
import json
import math
import subprocess
import time

import pytest

from conftest import BUILD, REPO, utt


def ms(iso):
    """Milliseconds since the epoch of an ISO 8601 time with an offset (Python's reading)."""
    dt = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(round(dt.timestamp() * 1000))


def cli_scores(texts_and_speakers):
    """What `attune score` says of each (text, speaker): the reference for stored scores."""
    data = "".join(json.dumps({"text": t, "speaker": s}) + "\n" for t, s in texts_and_speakers)
    p = subprocess.run([str(BUILD / "attune"), "score"], input=data, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [json.loads(l) for l in p.stdout.splitlines()]


def test_hello_gets_welcome_and_ping_gets_pong(daemon):
    c = daemon.connect()
    c.send({"type": "hello", "client": "bridge/2.1", "acks": "batch"})
    w = c.recv()
    assert w == {"type": "welcome", "server": w["server"], "protocol": 1}
    assert w["server"].startswith("attuned/")
    c.send({"type": "ping"})
    assert c.recv() == {"type": "pong"}
    # Several pings pipelined in one write: one pong each, in order.
    c.send(*[{"type": "ping"}] * 5)
    assert [c.recv() for _ in range(5)] == [{"type": "pong"}] * 5
    assert c.quiet(0.2) == []  # no acks for lines that were answered and stored nothing


def test_hello_with_a_token_is_welcomed_when_none_is_configured(daemon):
    c = daemon.connect()
    c.send({"type": "hello", "token": "anything", "client": "x", "future_field": 1},
           utt("c-tok", 0))
    assert c.wait_ack() == [{"type": "welcome", "server": c.messages[0]["server"],
                             "protocol": 1}]


def test_hello_is_optional_without_a_token(daemon):
    c = daemon.connect()
    c.send(utt("c-nohello", 0))
    assert c.wait_ack() == []
    assert daemon.rows("SELECT seq FROM utterances WHERE conversation_id = 'c-nohello'") == [(0,)]


def test_utterance_with_every_field(daemon):
    c = daemon.connect()
    text = "I'm so sorry, that must be really frustrating. Let me fix this right now."
    c.send(utt("c-1", 3, speaker="agent", text=text, ts="2026-11-25T12:00:03.120+02:00",
               start_ms=1500, end_ms=4250, participant_id="a-7", id="u-17",
               unknown_field={"ignored": True}))
    assert c.wait_ack() == []
    (row,) = daemon.dicts("SELECT * FROM utterances")
    assert row["conversation_id"] == "c-1"
    assert row["seq"] == 3
    assert row["speaker"] == "agent"
    assert row["participant_id"] == "a-7"
    assert row["ts"] == ms("2026-11-25T10:00:03.120Z") == 1795600803120
    assert row["start_ms"] == 1500 and row["end_ms"] == 4250
    assert row["text"] == text
    assert row["frustration_score"] is None  # only customer turns have one
    assert row["model_id"]
    # The scores are the library's, as the CLI computes them.
    (ref,) = cli_scores([(text, "agent")])
    assert (row["neg"], row["neu"], row["pos"]) == (ref["sentiment"]["neg"],
                                                     ref["sentiment"]["neu"],
                                                     ref["sentiment"]["pos"])
    assert row["compound"] == ref["sentiment"]["compound"]
    markers = daemon.dicts("SELECT * FROM markers WHERE conversation_id = 'c-1' AND seq = 3 "
                           "ORDER BY ordinal")
    assert [(m["family"], m["category"], m["pattern"], m["start_byte"], m["end_byte"])
            for m in markers] == [(m["family"], m["category"], m["pattern"], m["start"],
                                   m["end"]) for m in ref["markers"]]
    assert [m["ordinal"] for m in markers] == list(range(len(markers)))
    assert markers, "an apology should fire an empathy marker"
    # The utterance created its conversation with every fact unknown.
    (conv,) = daemon.dicts("SELECT * FROM conversations")
    assert conv["conversation_id"] == "c-1"
    for k in ("channel", "queue", "agent_id", "customer_id", "started_at", "ended_at",
              "resolved", "resolved_at", "csat", "nps", "escalated", "transferred"):
        assert conv[k] is None, k
    assert conv["created_at"] > 1_700_000_000_000 and conv["updated_at"] >= conv["created_at"]


def test_utterance_minimal_fields_are_null(daemon):
    c = daemon.connect()
    c.send(utt("c-min", 0, speaker="bot", text="Your ticket number is 42."))
    c.wait_ack()
    (row,) = daemon.dicts("SELECT * FROM utterances")
    for k in ("participant_id", "ts", "start_ms", "end_ms", "frustration_score"):
        assert row[k] is None, k
    assert row["speaker"] == "bot"


def test_customer_turns_carry_scores_and_frustration_markers(daemon):
    texts = [("This is the THIRD time I've been charged twice!! I'm furious, I will cancel.",
              "customer"),
             ("Thanks, that is great", "customer"),
             ("Please hold.", "system")]
    c = daemon.connect()
    c.send(*[utt("c-s", i, speaker=s, text=t) for i, (t, s) in enumerate(texts)])
    c.wait_ack()
    rows = daemon.dicts("SELECT * FROM utterances ORDER BY seq")
    refs = cli_scores(texts)
    assert len(rows) == 3
    for row, ref, (text, speaker) in zip(rows, refs, texts):
        assert row["speaker"] == speaker
        assert row["compound"] == ref["sentiment"]["compound"]
        assert -1 <= row["compound"] <= 1
        assert math.isclose(row["neg"] + row["neu"] + row["pos"], 1, abs_tol=0.002)
        if speaker == "customer":
            assert row["frustration_score"] == pytest.approx(ref["frustration_score"], abs=1e-4)
            assert 0 <= row["frustration_score"] <= 1
        else:
            assert row["frustration_score"] is None
        markers = daemon.rows("SELECT family, category, pattern, start_byte, end_byte "
                              "FROM markers WHERE seq = ? ORDER BY ordinal", (row["seq"],))
        assert markers == [(m["family"], m["category"], m["pattern"], m["start"], m["end"])
                           for m in ref["markers"]]
        for _, _, _, start, end in markers:
            assert 0 <= start < end <= len(text.encode())
    assert rows[0]["compound"] < 0 < rows[1]["compound"]
    families = {r[0] for r in daemon.rows("SELECT family FROM markers WHERE seq = 0")}
    assert "frustration" in families


def test_every_speaker_and_integer_times(daemon):
    c = daemon.connect()
    speakers = ["agent", "customer", "bot", "system"]
    c.send(*[utt("c-sp", i, speaker=s, ts=1795644000000 + i) for i, s in enumerate(speakers)])
    c.wait_ack()
    assert daemon.rows("SELECT seq, speaker, ts FROM utterances ORDER BY seq") == [
        (i, s, 1795644000000 + i) for i, s in enumerate(speakers)]


def test_rfc3339_times_in_any_offset_are_stored_as_utc_ms(daemon):
    cases = {
        "2026-11-25T10:00:03.120Z": ms("2026-11-25T10:00:03.120Z"),
        "2026-11-25T10:00:03Z": ms("2026-11-25T10:00:03Z"),
        "2026-11-25T11:30:03.120+01:30": ms("2026-11-25T10:00:03.120Z"),
        "2026-11-25T05:00:03.120-05:00": ms("2026-11-25T10:00:03.120Z"),
        "2026-11-26T00:30:00+14:00": ms("2026-11-25T10:30:00Z"),
        "2026-11-25T10:00:03.1Z": ms("2026-11-25T10:00:03.100Z"),
        "2026-11-25T10:00:03.123456Z": ms("2026-11-25T10:00:03.123Z"),
        "2026-11-25t10:00:03z": ms("2026-11-25T10:00:03Z"),
        "2024-02-29T23:59:59.999+00:00": ms("2024-02-29T23:59:59.999Z"),
        "1970-01-01T00:00:00Z": 0,
    }
    c = daemon.connect()
    c.send(*[utt("c-t", i, ts=t) for i, t in enumerate(cases)])
    assert c.wait_ack() == []
    assert daemon.rows("SELECT ts FROM utterances ORDER BY seq") == [(v,) for v in
                                                                     cases.values()]


def test_utterances_without_seq_are_numbered_in_arrival_order(daemon):
    c = daemon.connect()
    c.send(*[utt("c-auto", text="turn %d" % i) for i in range(5)])
    c.wait_ack()
    c.send(utt("c-auto", 10, text="turn ten"), utt("c-auto", text="after ten"))
    c.wait_ack()
    assert daemon.rows("SELECT seq, text FROM utterances ORDER BY seq") == [
        (0, "turn 0"), (1, "turn 1"), (2, "turn 2"), (3, "turn 3"), (4, "turn 4"),
        (10, "turn ten"), (11, "after ten")]


def test_start_stores_metadata(daemon):
    c = daemon.connect()
    c.send({"type": "start", "conversation_id": "c-st", "channel": "voice", "queue": "billing",
            "agent_id": "a-7", "customer_id": "u-9", "started_at": "2026-11-25T10:00:00Z",
            "id": 7, "extra": [1, 2]})
    assert c.wait_ack() == []
    (row,) = daemon.dicts("SELECT * FROM conversations")
    assert (row["conversation_id"], row["channel"], row["queue"], row["agent_id"],
            row["customer_id"], row["started_at"]) == (
        "c-st", "voice", "billing", "a-7", "u-9", ms("2026-11-25T10:00:00Z"))
    for k in ("ended_at", "resolved", "resolved_at", "csat", "nps", "escalated", "transferred"):
        assert row[k] is None, k
    assert daemon.rows("SELECT COUNT(*) FROM utterances") == [(0,)]


@pytest.mark.parametrize("channel", ["chat", "voice", "email", "social", "sms"])
def test_every_channel(attuned, channel):
    d = attuned()
    c = d.connect()
    c.send({"type": "start", "conversation_id": "c", "channel": channel})
    c.wait_ack()
    assert d.rows("SELECT channel FROM conversations") == [(channel,)]


def test_end_with_every_outcome_field(daemon):
    c = daemon.connect()
    c.send({"type": "start", "conversation_id": "c-end", "channel": "chat",
            "started_at": 1795644000000},
           {"type": "end", "conversation_id": "c-end", "ended_at": "2026-11-25T10:06:10Z",
            "resolved": True, "resolved_at": "2026-11-25T10:06:00.500+00:00", "csat": 4.5,
            "nps": 9, "escalated": False, "transferred": True})
    assert c.wait_ack() == []
    (row,) = daemon.dicts("SELECT * FROM conversations")
    assert row["channel"] == "chat" and row["started_at"] == 1795644000000
    assert row["ended_at"] == ms("2026-11-25T10:06:10Z")
    assert row["resolved"] == 1
    assert row["resolved_at"] == ms("2026-11-25T10:06:00.500Z")
    assert row["csat"] == 4.5
    assert row["nps"] == 9
    assert row["escalated"] == 0
    assert row["transferred"] == 1


def test_end_without_fields_keeps_what_is_stored(daemon):
    c = daemon.connect()
    c.send({"type": "start", "conversation_id": "c-e2", "queue": "q"},
           {"type": "end", "conversation_id": "c-e2"})
    c.wait_ack()
    assert daemon.rows("SELECT queue, ended_at FROM conversations") == [("q", None)]


def test_outcome_merges_into_what_is_stored(daemon):
    c = daemon.connect()
    c.send({"type": "start", "conversation_id": "c-o", "channel": "chat", "queue": "billing",
            "agent_id": "a-1", "customer_id": "u-1", "started_at": "2026-11-25T10:00:00Z"},
           utt("c-o", 0, text="I need to change my delivery address"),
           {"type": "end", "conversation_id": "c-o", "ended_at": "2026-11-25T10:06:10Z",
            "resolved": True, "escalated": True})
    c.wait_ack()
    (before,) = daemon.dicts("SELECT * FROM conversations")
    # Hours later a survey answer arrives, on a new connection.
    c2 = daemon.connect()
    c2.send({"type": "outcome", "conversation_id": "c-o", "csat": 5})
    c2.wait_ack()
    (row,) = daemon.dicts("SELECT * FROM conversations")
    assert row["csat"] == 5.0
    for k in ("channel", "queue", "agent_id", "customer_id", "started_at", "ended_at",
              "resolved", "escalated", "created_at"):
        assert row[k] == before[k], k
    assert row["updated_at"] >= before["updated_at"]
    # Each later message overwrites only what it carries, even a flag going back to 0.
    c2.send({"type": "outcome", "conversation_id": "c-o", "escalated": False, "nps": 3,
             "resolved_at": 1795644370000, "transferred": False},
            {"type": "start", "conversation_id": "c-o", "queue": "retention"})
    c2.wait_ack()
    (row,) = daemon.dicts("SELECT * FROM conversations")
    # (No escalation request in the text: ANALYTICS.md makes `escalated` 1 whenever one was
    # detected, whatever the outcome says; test_escalated_is_one_when_a_request_was_detected.)
    assert (row["escalated"], row["nps"], row["resolved_at"], row["transferred"], row["csat"],
            row["queue"], row["channel"], row["resolved"]) == (
        0, 3, 1795644370000, 0, 5.0, "retention", "chat", 1)
    # null means "not sent": it changes nothing.
    c2.send({"type": "outcome", "conversation_id": "c-o", "csat": None, "nps": None})
    c2.wait_ack()
    assert daemon.rows("SELECT csat, nps FROM conversations") == [(5.0, 3)]
    assert daemon.rows("SELECT COUNT(*) FROM utterances") == [(1,)]


def test_outcome_for_an_unknown_conversation_creates_it(daemon):
    c = daemon.connect()
    c.send({"type": "outcome", "conversation_id": "c-late", "resolved": False, "csat": 1})
    c.wait_ack()
    assert daemon.rows("SELECT conversation_id, resolved, csat, channel FROM conversations") == [
        ("c-late", 0, 1.0, None)]


def test_conversation_with_turns_and_outcome(daemon):
    turns = [
        {"speaker": "customer", "text": "My internet has been down for three days!",
         "ts": "2026-11-25T10:00:04Z", "participant_id": "u-9"},
        {"speaker": "agent", "text": "I understand how frustrating that is.", "start_ms": 5000,
         "end_ms": 7000, "participant_id": "a-7", "id": "t-1"},
        {"speaker": "customer", "text": "ok thanks", "seq": 7, "ts": 1795644100000},
    ]
    c = daemon.connect()
    c.send({"type": "conversation", "conversation_id": "c-conv", "channel": "email",
            "queue": "tech", "agent_id": "a-7", "customer_id": "u-9",
            "started_at": "2026-11-25T10:00:00Z", "turns": turns,
            "outcome": {"resolved": True, "resolved_at": "2026-11-25T10:30:00Z", "csat": 3,
                        "nps": 7, "escalated": False, "transferred": False}})
    assert c.wait_ack() == []
    (row,) = daemon.dicts("SELECT * FROM conversations")
    assert (row["channel"], row["queue"], row["agent_id"], row["customer_id"],
            row["started_at"], row["resolved"], row["resolved_at"], row["csat"], row["nps"],
            row["escalated"], row["transferred"], row["ended_at"]) == (
        "email", "tech", "a-7", "u-9", ms("2026-11-25T10:00:00Z"), 1,
        ms("2026-11-25T10:30:00Z"), 3.0, 7, 0, 0, None)
    # Turns without seq take their index in the array.
    assert daemon.rows("SELECT seq, speaker, participant_id, ts, start_ms, end_ms, text "
                       "FROM utterances ORDER BY seq") == [
        (0, "customer", "u-9", ms("2026-11-25T10:00:04Z"), None, None, turns[0]["text"]),
        (1, "agent", "a-7", None, 5000, 7000, turns[1]["text"]),
        (7, "customer", None, 1795644100000, None, None, "ok thanks")]
    refs = cli_scores([(t["text"], t["speaker"]) for t in turns])
    stored = daemon.rows("SELECT compound FROM utterances ORDER BY seq")
    assert stored == [(r["sentiment"]["compound"],) for r in refs]


def test_conversation_with_no_turns(daemon):
    c = daemon.connect()
    c.send({"type": "conversation", "conversation_id": "c-empty", "turns": [],
            "channel": "sms"})
    c.wait_ack()
    assert daemon.rows("SELECT conversation_id, channel FROM conversations") == [
        ("c-empty", "sms")]
    assert daemon.rows("SELECT COUNT(*) FROM utterances") == [(0,)]


def test_subscribe_is_accepted(daemon):
    c = daemon.connect()
    c.send({"type": "subscribe", "events": ["alert"]},
           {"type": "subscribe", "events": ["alert"], "filter": {"queue": "billing",
                                                                 "agent_id": "a-7"}},
           {"type": "ping"})
    assert c.recv() == {"type": "pong"}
    # The subscriber still sends data on the same connection.
    c.send(utt("c-sub", 0))
    assert [m for m in c.wait_ack() if m["type"] == "error"] == []
    assert c.errors() == []


def test_hello_acks_none_stores_without_acks(daemon):
    c = daemon.connect()
    c.send({"type": "hello", "client": "fire-and-forget", "acks": "none"})
    assert c.recv()["type"] == "welcome"
    c.send(*[utt("c-none", i) for i in range(20)])
    c.send({"type": "ping"})
    assert c.recv() == {"type": "pong"}
    assert c.quiet(0.5) == []
    deadline = time.monotonic() + 10
    while daemon.rows("SELECT COUNT(*) FROM utterances") != [(20,)]:
        assert time.monotonic() < deadline, "not stored"
        time.sleep(0.02)
    assert c.quiet(0.1) == []
    # Errors are still reported.
    c.send("{nope")
    assert c.recv()["code"] == "invalid_json"


def test_store_text_full_keeps_text_byte_for_byte(attuned):
    d = attuned(store_text="full")
    text = "Caf\u00e9 \u2014 ok \U0001f620 \"quoted\" \\ tab\tend"
    c = d.connect()
    c.send(utt("c-full", 0, text=text),
           {"type": "conversation", "conversation_id": "c-full2",
            "turns": [{"speaker": "agent", "text": text}]})
    c.wait_ack()
    assert d.rows("SELECT text FROM utterances ORDER BY conversation_id") == [(text,), (text,)]


def test_store_text_none_stores_scores_and_markers_but_no_text(attuned):
    d = attuned(store_text="none")
    text = "I am angry and I will cancel my account!"
    c = d.connect()
    c.send(utt("c-none", 0, text=text),
           {"type": "conversation", "conversation_id": "c-none2",
            "turns": [{"speaker": "customer", "text": text}]})
    c.wait_ack()
    rows = d.rows("SELECT text, compound, frustration_score FROM utterances")
    assert len(rows) == 2
    (ref,) = cli_scores([(text, "customer")])
    for text_col, compound, frus in rows:
        assert text_col is None
        assert compound == ref["sentiment"]["compound"]
        assert frus == pytest.approx(ref["frustration_score"], abs=1e-4)
    # Markers keep their offsets into the text as scored.
    assert d.rows("SELECT COUNT(*) FROM markers") == [(2 * len(ref["markers"]),)]
    for f in (d.db, d.db.with_name(d.db.name + "-wal")):
        if f.exists():
            assert text.encode() not in f.read_bytes()


def test_store_text_default_is_redacted_and_stores_no_raw_text(attuned):
    d = attuned()
    c = d.connect()
    c.send(utt("c-red", 0, text="my card number is 4111 1111 1111 1111"))
    c.wait_ack()
    (text,) = d.rows("SELECT text FROM utterances")[0]
    assert text is None or "4111 1111 1111 1111" not in text


def test_schema_is_at_the_latest_migration(daemon):
    # The migrations are compiled into the binary: the ones next to the build it came from.
    schema = BUILD.parent / "schema"
    n = len(list((schema if schema.is_dir() else REPO / "schema").glob("[0-9]*_*.sql")))
    assert daemon.rows("PRAGMA user_version") == [(n,)]
    assert daemon.rows("PRAGMA journal_mode") == [("wal",)]


def test_escalated_is_one_when_a_request_was_detected(daemon):
    c = daemon.connect()
    c.send(utt("c-x", 0, text="I want to speak to a manager"),
           {"type": "outcome", "conversation_id": "c-x", "escalated": False})
    c.wait_ack()
    assert daemon.rows("SELECT escalated, escalation_requested FROM conversations") == [(1, 1)]

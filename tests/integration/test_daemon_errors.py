"""attuned: every error code of PROTOCOL.md that a client can trigger, line numbers, echoed ids,
and the connection staying usable after each error that is not fatal."""
import json
import socket
import subprocess
import time

import pytest

from conftest import Closed, db_connect, refuse_seq, utt

U = {"type": "utterance", "conversation_id": "c", "speaker": "customer", "text": "hi"}


def with_(base, **kw):
    m = dict(base)
    for k, v in kw.items():
        if v is DROP:
            m.pop(k, None)
        else:
            m[k] = v
    return m


DROP = object()
CONV = {"type": "conversation", "conversation_id": "c", "turns": [U]}
TURN = {"speaker": "agent", "text": "ok"}

# (line, field the message must name)
MISSING = [
    ({"conversation_id": "c"}, "type"),
    (with_(U, conversation_id=DROP), "conversation_id"),
    (with_(U, conversation_id=None), "conversation_id"),
    (with_(U, speaker=DROP), "speaker"),
    (with_(U, text=DROP), "text"),
    ({"type": "conversation", "conversation_id": "c"}, "turns"),
    (with_(CONV, turns=[TURN, {"text": "no speaker"}]), "turns[1].speaker"),
    (with_(CONV, turns=[TURN, TURN, {"speaker": "agent"}]), "turns[2].text"),
    ({"type": "conversation", "turns": []}, "conversation_id"),
    ({"type": "start"}, "conversation_id"),
    ({"type": "end", "ended_at": 5}, "conversation_id"),
    ({"type": "outcome", "csat": 5}, "conversation_id"),
    ({"type": "subscribe"}, "events"),
]

BAD = [
    ({"type": 5}, "type"),
    ({"type": None}, "type"),
    (with_(U, conversation_id=""), "conversation_id"),
    (with_(U, conversation_id=42), "conversation_id"),
    (with_(U, conversation_id="x" * 1025), "conversation_id"),
    (with_(U, speaker="robot"), "speaker"),
    (with_(U, speaker=1), "speaker"),
    (with_(U, speaker="Agent"), "speaker"),
    (with_(U, text=5), "text"),
    (with_(U, text=None), "text"),
    (with_(U, text=["hi"]), "text"),
    (with_(U, seq=-1), "seq"),
    (with_(U, seq="1"), "seq"),
    (with_(U, seq=1.5), "seq"),
    (with_(U, seq=1.0), "seq"),
    (with_(U, seq=2 ** 53), "seq"),
    (with_(U, seq=True), "seq"),
    (with_(U, ts="yesterday"), "ts"),
    (with_(U, ts="2026-13-01T00:00:00Z"), "ts"),
    (with_(U, ts="2026-02-29T00:00:00Z"), "ts"),
    (with_(U, ts="2026-11-25T25:00:00Z"), "ts"),
    (with_(U, ts="2026-11-25T10:00:00"), "ts"),
    (with_(U, ts="2026-11-25"), "ts"),
    (with_(U, ts="2026-11-25T10:00:00+0200"), "ts"),
    (with_(U, ts="2026-11-25T10:00:00Zjunk"), "ts"),
    (with_(U, ts="1969-12-31T23:59:59Z"), "ts"),
    (with_(U, ts=-1), "ts"),
    (with_(U, ts=1.5), "ts"),
    (with_(U, ts=True), "ts"),
    (with_(U, ts=253402300800000), "ts"),
    (with_(U, start_ms=-1), "start_ms"),
    (with_(U, start_ms="5"), "start_ms"),
    (with_(U, end_ms=2.5), "end_ms"),
    (with_(U, start_ms=5000, end_ms=4000), "end_ms"),
    (with_(U, participant_id=7), "participant_id"),
    (with_(U, participant_id=""), "participant_id"),
    (with_(CONV, channel="phone"), "channel"),
    (with_(CONV, channel=3), "channel"),
    (with_(CONV, queue=5), "queue"),
    (with_(CONV, agent_id=[]), "agent_id"),
    (with_(CONV, customer_id={}), "customer_id"),
    (with_(CONV, started_at="noon"), "started_at"),
    (with_(CONV, turns="abc"), "turns"),
    (with_(CONV, turns={"0": U}), "turns"),
    (with_(CONV, turns=[TURN, 1]), "turns[1]"),
    (with_(CONV, turns=[TURN, with_(TURN, speaker="boss")]), "turns[1].speaker"),
    (with_(CONV, turns=[with_(TURN, seq=-3)]), "turns[0].seq"),
    (with_(CONV, turns=[with_(TURN, ts="later")]), "turns[0].ts"),
    (with_(CONV, outcome="good"), "outcome"),
    (with_(CONV, outcome={"csat": 9}), "outcome.csat"),
    (with_(CONV, outcome={"resolved": "yes"}), "outcome.resolved"),
    ({"type": "start", "conversation_id": "c", "channel": "fax"}, "channel"),
    ({"type": "start", "conversation_id": "c", "started_at": "2026-11-25 10:00"}, "started_at"),
    ({"type": "end", "conversation_id": "c", "ended_at": "x"}, "ended_at"),
    ({"type": "end", "conversation_id": "c", "resolved": 1}, "resolved"),
    ({"type": "end", "conversation_id": "c", "csat": 5.5}, "csat"),
    ({"type": "outcome", "conversation_id": "c", "resolved": "yes"}, "resolved"),
    ({"type": "outcome", "conversation_id": "c", "escalated": 0}, "escalated"),
    ({"type": "outcome", "conversation_id": "c", "transferred": "false"}, "transferred"),
    ({"type": "outcome", "conversation_id": "c", "resolved_at": "soon"}, "resolved_at"),
    ({"type": "outcome", "conversation_id": "c", "csat": 0}, "csat"),
    ({"type": "outcome", "conversation_id": "c", "csat": 0.99}, "csat"),
    ({"type": "outcome", "conversation_id": "c", "csat": 6}, "csat"),
    ({"type": "outcome", "conversation_id": "c", "csat": "5"}, "csat"),
    ({"type": "outcome", "conversation_id": "c", "csat": True}, "csat"),
    ({"type": "outcome", "conversation_id": "c", "nps": -1}, "nps"),
    ({"type": "outcome", "conversation_id": "c", "nps": 11}, "nps"),
    ({"type": "outcome", "conversation_id": "c", "nps": 7.5}, "nps"),
    ({"type": "outcome", "conversation_id": "c", "nps": "7"}, "nps"),
    ({"type": "subscribe", "events": []}, "events"),
    ({"type": "subscribe", "events": "alert"}, "events"),
    ({"type": "subscribe", "events": ["alert", "gossip"]}, "events[1]"),
    ({"type": "subscribe", "events": ["alert"], "filter": "billing"}, "filter"),
    ({"type": "subscribe", "events": ["alert"], "filter": {"queue": 5}}, "filter.queue"),
    ({"type": "hello", "token": 5}, "token"),
    ({"type": "hello", "client": 5}, "client"),
    ({"type": "hello", "acks": "sometimes"}, "acks"),
]

INVALID_JSON = [b"{nope", b"{\"type\":\"ping\"", b"{\"type\":\"ping\"} x",
                b"{\"type\":\"ping\",\"type\":\"ping\"}", b"{'type':'ping'}",
                b"{\"type\":\"ping\",}", b"\"unterminated",
                # not JSON numbers, though Python writes them
                b'{"type":"outcome","conversation_id":"c","csat":NaN}',
                b'{"type":"outcome","conversation_id":"c","csat":Infinity}',
                b'{"type":"outcome","conversation_id":"c","nps":-Infinity}',
                # a number jansson cannot hold where JSON allows no number at all
                b'{"type":"ping",1e400:1}', b'{"type":"ping","a":1e400 junk}']
INVALID_UTF8 = [b'{"type":"ping","x":"\xff"}', b'{"type":"ping","x":"\xc0\xaf"}',
                b'{"type":"ping","x":"\xed\xa0\x80"}', b'{"type":"ping","x":"caf\xe9"}',
                b'{"type":"utterance","conversation_id":"c","speaker":"agent","text":"\xe2\x82"}']
NOT_OBJECT = [b"[1,2]", b"[]", b"[{\"type\":\"ping\"}]", b"\"ping\"", b"42", b"null", b"true"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One daemon for the many one-line cases of this module."""
    from conftest import Daemon, integrity_ok
    tmp = tmp_path_factory.mktemp("errors")
    d = Daemon(tmp, tmp / "attune.db", {"store_text": "full"}).start()
    yield d
    assert d.stop() == 0, d.log()
    integrity_ok(d.db)


def check_rejected(d, line, code, field=None, with_id=True):
    """Sends line (with an id when it is an object), expects one error for it naming field,
    then proves the connection still works and nothing of the line was stored."""
    c = d.connect()
    counts = ("SELECT (SELECT COUNT(*) FROM conversations WHERE conversation_id <> "
              "'ok-after-error'), (SELECT COUNT(*) FROM utterances WHERE conversation_id <> "
              "'ok-after-error')")
    before = d.rows(counts)
    c.send({"type": "ping"})
    assert c.recv() == {"type": "pong"}
    if isinstance(line, dict) and with_id:
        line = dict(line, id="req-%d" % (hash(json.dumps(line, sort_keys=True)) % 10000))
    n = c.send(line)
    assert n == 2
    err = c.recv()
    assert err["type"] == "error", err
    assert err["code"] == code, err
    assert err["line"] == 2, err
    assert isinstance(err["message"], str) and err["message"]
    assert "\n" not in err["message"]
    if isinstance(line, dict) and "id" in line:
        assert err["id"] == line["id"], err
    else:
        assert "id" not in err, err
    if field:
        assert '"%s"' % field in err["message"], err
    # The connection stays usable: the next lines are numbered on and processed.
    c.send({"type": "ping"}, utt("ok-after-error", None, text="still here"))
    assert c.recv() == {"type": "pong"}
    assert c.wait_ack(4) == []
    assert d.rows(counts) == before, "a rejected line stored something"
    c.close()
    return err


@pytest.mark.parametrize("line,field", MISSING, ids=[f for _, f in MISSING])
def test_missing_field(shared, line, field):
    check_rejected(shared, line, "missing_field", field)


@pytest.mark.parametrize("line,field", BAD, ids=["%s-%d" % (f, i) for i, (_, f) in
                                                 enumerate(BAD)])
def test_bad_field(shared, line, field):
    check_rejected(shared, line, "bad_field", field)


@pytest.mark.parametrize("line", INVALID_JSON)
def test_invalid_json(shared, line):
    check_rejected(shared, line, "invalid_json")


@pytest.mark.parametrize("line", INVALID_UTF8)
def test_invalid_utf8(shared, line):
    check_rejected(shared, line, "invalid_utf8")


@pytest.mark.parametrize("line", NOT_OBJECT)
def test_not_object(shared, line):
    check_rejected(shared, line, "not_object")


# ---- NUL characters and numbers out of range ---------------------------------------------------

# (line, where the NUL is): "\u0000" is valid JSON, but no string may hold it (the daemon would
# cut it short as a C string), in a known field or not.
NUL = "a\u0000b"
WITH_NUL = [
    (with_(U, text=NUL), "text"),
    (with_(U, text="\u0000"), "text"),
    (with_(U, conversation_id=NUL), "conversation_id"),
    (with_(U, type="utterance\u0000"), "type"),
    (with_(U, speaker="agent\u0000"), "speaker"),
    (with_(U, participant_id=NUL), "participant_id"),
    (with_(U, ts="2026-11-25T10:00:00Z\u0000junk"), "ts"),
    (with_(U, extra={"deep": [1, NUL]}), "extra.deep[1]"),
    (with_(CONV, turns=[TURN, with_(TURN, text=NUL)]), "turns[1].text"),
    (with_(CONV, queue=NUL), "queue"),
    (with_(CONV, outcome={"resolved": True, "note": NUL}), "outcome.note"),
    ({"type": "hello", "token": "s3cret\u0000", "client": "x"}, "token"),
    ({"type": "hello", "acks": "none\u0000"}, "acks"),
    ({"type": "hello", "client": NUL}, "client"),
    ({"type": "subscribe", "events": ["alert\u0000"]}, "events[0]"),
    ({"type": "subscribe", "events": ["alert"], "filter": {"queue": NUL}}, "filter.queue"),
]


@pytest.mark.parametrize("line,field", WITH_NUL, ids=[f for _, f in WITH_NUL])
def test_nul_in_a_string_is_bad_field(shared, line, field):
    err = check_rejected(shared, line, "bad_field", field)
    assert "NUL" in err["message"], err


def test_nul_in_the_id_is_bad_field_and_the_id_is_echoed(shared):
    c = shared.connect()
    c.send(with_(U, id=["x\u0000y", 3]), {"type": "ping"})
    err = c.recv()
    assert (err["type"], err["code"], err["line"], err["id"]) == (
        "error", "bad_field", 1, ["x\u0000y", 3]), err
    assert '"id[0]"' in err["message"]
    assert c.recv() == {"type": "pong"}


def test_nul_in_a_key_is_bad_field(shared):
    err = check_rejected(shared, b'{"type":"ping","a\\u0000b":1}', "bad_field")
    assert "key" in err["message"] and "NUL" in err["message"], err


def raw(base, **literals):
    """base as a JSON line, with each field of literals set to that JSON text as it is (for
    numbers Python cannot write, such as 1e400)."""
    m = dict(base, **{k: "@%s@" % k for k in literals})
    line = json.dumps(m, separators=(",", ":"))
    for k, text in literals.items():
        line = line.replace('"@%s@"' % k, text)
    return line.encode()


TURN_RAW = '{"speaker":"agent","text":"ok","%s":%s}'
OUTCOME = {"type": "outcome", "conversation_id": "c"}
END = {"type": "end", "conversation_id": "c"}
START = {"type": "start", "conversation_id": "c"}
# Past what the JSON parser holds: beyond 64-bit integers or the largest double.
HUGE = ["99999999999999999999", "-99999999999999999999", "18446744073709551616", "1e400",
        "-1e400", "1.5e999"]
# Every numeric field of PROTOCOL.md (and rescore's since), with a number no field may hold.
NUMERIC = [("seq", U), ("ts", U), ("start_ms", U), ("end_ms", U), ("started_at", START),
           ("started_at", CONV), ("ended_at", END), ("resolved_at", OUTCOME),
           ("csat", OUTCOME), ("nps", OUTCOME), ("csat", END), ("nps", END),
           ("since", {"type": "rescore"})]
TOO_BIG = [(raw(base, **{f: n}), f) for f, base in NUMERIC
           for n in ("99999999999999999999", "-18446744073709551616", "1e400")]
TOO_BIG += [(raw(CONV, turns="[%s]" % (TURN_RAW % ("seq", n))), "turns[0].seq") for n in HUGE]
TOO_BIG += [(raw(CONV, outcome='{"nps":%s}' % n), "outcome.nps") for n in HUGE]
TOO_BIG += [(raw(U, extra='{"k":[0,%s]}' % n), "extra.k[1]") for n in HUGE]
TOO_BIG += [(raw({"type": "ping"}, unknown=n), "unknown") for n in HUGE]


@pytest.mark.parametrize("line,field", TOO_BIG, ids=["%s-%d" % (f, i) for i, (_, f) in
                                                     enumerate(TOO_BIG)])
def test_a_number_the_parser_cannot_hold_is_bad_field(shared, line, field):
    err = check_rejected(shared, line, "bad_field", field)
    assert "out of range" in err["message"], err


def test_a_number_the_parser_cannot_hold_keeps_the_id(shared):
    c = shared.connect()
    c.send(raw(dict(U, id="req-7"), seq="99999999999999999999"),
           raw(dict(U, id="req-8"), id="[1,1e400]"))
    errors = [c.recv(), c.recv()]
    assert [(e["line"], e["code"], e.get("id")) for e in errors] == [
        (1, "bad_field", "req-7"), (2, "bad_field", None)], errors
    assert '"id[1]"' in errors[1]["message"]


# Numbers the parser holds but their field does not: every numeric field, at and past each
# bound, as integer and as real.
OUT_OF_FIELD_RANGE = [
    (with_(U, seq=2 ** 63 - 1), "seq"), (with_(U, seq=-(2 ** 63)), "seq"),
    (with_(U, seq=1e300), "seq"), (with_(U, seq=-0.0), "seq"),
    (with_(U, ts=2 ** 63 - 1), "ts"), (with_(U, ts=-(2 ** 63)), "ts"), (with_(U, ts=1e15), "ts"),
    (with_(U, start_ms=2 ** 53), "start_ms"), (with_(U, start_ms=1e300), "start_ms"),
    (with_(U, end_ms=-1), "end_ms"), (with_(U, end_ms=2 ** 53), "end_ms"),
    (with_(U, end_ms=-1e300), "end_ms"),
    (with_(START, started_at=-1), "started_at"),
    (with_(START, started_at=253402300800000), "started_at"),
    (with_(START, started_at=1.0), "started_at"),
    (with_(END, ended_at=2 ** 63 - 1), "ended_at"), (with_(END, ended_at=-5), "ended_at"),
    (with_(OUTCOME, resolved_at=-1), "resolved_at"),
    (with_(OUTCOME, resolved_at=1e300), "resolved_at"),
    (with_(OUTCOME, csat=-1e308), "csat"), (with_(OUTCOME, csat=5.000001), "csat"),
    (with_(OUTCOME, csat=2 ** 63 - 1), "csat"), (with_(OUTCOME, csat=1e-300), "csat"),
    (with_(OUTCOME, nps=2 ** 63 - 1), "nps"), (with_(OUTCOME, nps=-(2 ** 63)), "nps"),
    (with_(OUTCOME, nps=10.0), "nps"), (with_(OUTCOME, nps=1e300), "nps"),
    (with_(CONV, turns=[with_(TURN, end_ms=-1)]), "turns[0].end_ms"),
    (with_(CONV, outcome={"csat": 1e308}), "outcome.csat"),
    ({"type": "rescore", "since": -1}, "since"),
    ({"type": "rescore", "since": 1e300}, "since"),
    ({"type": "rescore", "since": 253402300800000}, "since"),
]


@pytest.mark.parametrize("line,field", OUT_OF_FIELD_RANGE,
                         ids=["%s-%d" % (f, i) for i, (_, f) in enumerate(OUT_OF_FIELD_RANGE)])
def test_a_number_out_of_its_fields_range_is_bad_field(shared, line, field):
    check_rejected(shared, line, "bad_field", field)


def test_unknown_type(shared):
    err = check_rejected(shared, {"type": "typing", "conversation_id": "c"}, "unknown_type")
    assert "typing" in err["message"]
    check_rejected(shared, {"type": "Utterance", "conversation_id": "c", "speaker": "agent",
                            "text": "x"}, "unknown_type")
    check_rejected(shared, {"type": "ack", "through": 3}, "unknown_type")


@pytest.mark.parametrize("id_", ["u-17", 17, 0, {"k": [1, "two"]}, None, "\u00e9\U0001f620"])
def test_id_is_echoed_as_sent(shared, id_):
    c = shared.connect()
    c.send({"type": "utterance", "conversation_id": "c", "speaker": "alien", "text": "x",
            "id": id_})
    err = c.recv()
    assert err["code"] == "bad_field" and err["line"] == 1
    assert "id" in err and err["id"] == id_


def test_a_bad_turn_rejects_the_whole_conversation(shared):
    turns = [{"speaker": "customer", "text": "one"}, {"speaker": "agent", "text": "two"},
             {"speaker": "customer", "text": "three", "ts": "not a time"}]
    check_rejected(shared, {"type": "conversation", "conversation_id": "c-partial",
                            "channel": "chat", "turns": turns}, "bad_field", "turns[2].ts")
    assert shared.rows("SELECT COUNT(*) FROM conversations WHERE conversation_id = "
                       "'c-partial'") == [(0,)]


def test_error_line_numbers_with_pipelined_good_and_bad_lines(shared):
    """Errors name the right line among pipelined good lines; acks count every line."""
    c = shared.connect()
    lines, expect = [], {}
    for i in range(60):
        k = i % 6
        if k == 0:
            lines.append(utt("c-lines", i, text="line %d" % i))
        elif k == 1:
            lines.append(b"{broken")
            expect[i + 1] = ("invalid_json", None)
        elif k == 2:
            lines.append({"type": "ping"})
        elif k == 3:
            lines.append({"type": "bogus", "id": "b%d" % i})
            expect[i + 1] = ("unknown_type", "b%d" % i)
        elif k == 4:
            lines.append(utt("c-lines", i, speaker="nobody", id=i))
            expect[i + 1] = ("bad_field", i)
        else:
            lines.append(b"[]")
            expect[i + 1] = ("not_object", None)
    lines.append(utt("c-lines", 1000))
    n = c.send(*lines)
    others = c.wait_ack(n)
    errors = [m for m in others if m["type"] == "error"]
    assert {e["line"]: (e["code"], e.get("id")) for e in errors} == expect
    assert [e["line"] for e in errors] == sorted(expect), "errors come in line order"
    assert sum(1 for m in others if m["type"] == "pong") == 10
    assert shared.rows("SELECT seq FROM utterances WHERE conversation_id = 'c-lines' "
                       "ORDER BY seq") == [(i,) for i in range(0, 60, 6)] + [(1000,)]


def test_crlf_and_blank_lines_are_numbered(shared):
    c = shared.connect()
    c.send_raw(b'{"type":"ping"}\r\n' + json.dumps(utt("c-crlf", 0)).encode() + b"\r\n" +
               b'{"type":"nope","id":"x"}\r\n' + b"\n" + b"\r\n" + b'{"type":"ping"}\n')
    assert c.recv() == {"type": "pong"}
    # A blank line is a line too: it is numbered, and it is not a JSON object.
    errors = [c.recv_type("error") for _ in range(3)]
    assert [(e["line"], e["code"], e.get("id")) for e in errors] == [
        (3, "unknown_type", "x"), (4, "invalid_json", None), (5, "invalid_json", None)]
    assert c.recv_type("pong") == {"type": "pong"}
    c.send(utt("c-crlf", 1))
    c.wait_ack(7)
    assert shared.rows("SELECT seq FROM utterances WHERE conversation_id = 'c-crlf'") == [
        (0,), (1,)]


# ---- line_too_long ----------------------------------------------------------------------------

def padded(n, **kw):
    """A valid utterance line of exactly n bytes."""
    m = utt("c-long", text="x", **kw)
    m["pad"] = ""
    base = len(json.dumps(m, separators=(",", ":")))
    m["pad"] = "p" * (n - base)
    line = json.dumps(m, separators=(",", ":")).encode()
    assert len(line) == n
    return line


def test_line_too_long_is_discarded_up_to_its_newline(attuned):
    d = attuned(max_line_bytes=1024, store_text="full")
    c = d.connect()
    c.send(padded(1024, seq=0))                       # exactly the limit: accepted
    c.send(padded(1025, seq=1, id="too-long"))        # one byte over
    c.send(utt("c-long", 2, text="next"))
    others = c.wait_ack(3)
    assert [(m["type"], m.get("line"), m.get("code")) for m in others] == [
        ("error", 2, "line_too_long")]
    assert "1024" in others[0]["message"] and "max_line_bytes" in others[0]["message"]
    assert d.rows("SELECT seq FROM utterances ORDER BY seq") == [(0,), (2,)]
    # A huge line (1 MB) arriving in pieces, then more lines in the same write as its end.
    big = json.dumps(utt("c-long", 3, text="y" * 1_000_000)).encode()
    for i in range(0, len(big) - 1000, 64 * 1024):
        c.sock.sendall(big[i:i + 64 * 1024])
        time.sleep(0.002)
    c.sock.sendall(big[i + 64 * 1024:] + b"\n" + json.dumps(utt("c-long", 4)).encode() +
                   b"\n{\"type\":\"ping\"}\n")
    c.lines += 3
    err = c.recv()
    assert (err["type"], err["line"], err["code"]) == ("error", 4, "line_too_long")
    c.wait_ack(6)
    assert c.errors() == [others[0], err], "exactly one error per long line"
    assert d.rows("SELECT seq FROM utterances ORDER BY seq") == [(0,), (2,), (4,)]
    # Several long lines in one write, each answered once, in order.
    n0 = c.lines
    c.send(padded(5000, seq=5), utt("c-long", 6), padded(1025, seq=7), padded(1024, seq=8))
    c.wait_ack(n0 + 4)
    assert [e["line"] for e in c.errors()[2:]] == [n0 + 1, n0 + 3]
    assert d.rows("SELECT seq FROM utterances ORDER BY seq") == [(0,), (2,), (4,), (6,), (8,)]


def test_line_at_the_limit_with_crlf_is_accepted(attuned):
    d = attuned(max_line_bytes=1024)
    c = d.connect()
    c.send_raw(padded(1024, seq=0) + b"\r\n")
    c.wait_ack(1)
    # The same, with the \r and the \n in separate segments.
    c.sock.sendall(padded(1024, seq=1) + b"\r")
    time.sleep(0.3)
    c.send_raw(b"\n")
    c.send(utt("c-long", 2))
    c.wait_ack(3)
    assert c.errors() == []
    assert d.rows("SELECT seq FROM utterances ORDER BY seq") == [(0,), (1,), (2,)]


# ---- unauthorized -----------------------------------------------------------------------------

@pytest.fixture
def secured(attuned):
    return attuned(auth_token="s3cret-token", store_text="full")


def test_correct_token_is_welcomed(secured):
    c = secured.connect()
    c.send({"type": "hello", "token": "s3cret-token", "client": "bridge/2.1"})
    assert c.recv()["type"] == "welcome"
    c.send(utt("c-auth", 0))
    assert c.wait_ack() == []
    assert secured.rows("SELECT COUNT(*) FROM utterances") == [(1,)]


@pytest.mark.parametrize("first", [
    utt("c-auth", 0),
    {"type": "ping"},
    {"type": "hello"},
    {"type": "hello", "token": "wrong"},
    {"type": "hello", "token": "s3cret-toke"},
    {"type": "hello", "token": "s3cret-token-and-more"},
    {"type": "hello", "token": ""},
    {"type": "start", "conversation_id": "c-auth", "id": "first"},
    b"{not json",
], ids=["utterance", "ping", "hello-no-token", "wrong", "prefix", "longer", "empty",
        "start", "invalid-json"])
def test_unauthorized_then_closed(secured, first):
    c = secured.connect()
    # The client pipelines more lines after the bad first one, including a correct hello:
    # the server must not process them once it has said unauthorized.
    c.send(first, {"type": "hello", "token": "s3cret-token"}, utt("c-auth", 1),
           {"type": "ping"})
    got = c.expect_closed()
    errors = [m for m in got if m["type"] == "error"]
    assert errors and errors[-1]["code"] == "unauthorized", got
    assert all(e["line"] == 1 for e in errors), got
    assert [m for m in got if m["type"] != "error"] == [], got
    if isinstance(first, dict) and "id" in first:
        assert errors[-1].get("id") == first["id"]
    # Another client with the token is unaffected. Its utterance of the same conversation
    # goes through the same worker and the writer after anything the first one submitted, so
    # once it is acknowledged, whatever the refused connection got in is visible too.
    ok = secured.connect()
    ok.send({"type": "hello", "token": "s3cret-token"}, {"type": "ping"}, utt("c-auth", 99))
    assert [m["type"] for m in ok.wait_ack()] == ["welcome", "pong"]
    assert secured.rows("SELECT conversation_id FROM conversations") == [("c-auth",)]
    assert secured.rows("SELECT seq FROM utterances") == [(99,)], \
        "lines after the unauthorized one were processed"


# ---- overloaded, idle timeout -----------------------------------------------------------------

def test_connections_over_max_connections_are_refused_with_overloaded(attuned):
    d = attuned(max_connections=3)
    held = [d.connect() for _ in range(3)]
    for c in held:
        c.send({"type": "ping"})
        assert c.recv() == {"type": "pong"}
    for _ in range(3):
        extra = d.connect()
        got = extra.expect_closed()
        assert len(got) == 1 and got[0]["type"] == "error", got
        assert got[0]["code"] == "overloaded"
        assert "3" in got[0]["message"]
    # The held connections still work.
    for c in held:
        c.send({"type": "ping"})
        assert c.recv() == {"type": "pong"}
    # A closed connection frees its slot.
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:
        c = d.connect()
        c.send({"type": "ping"})
        try:
            assert c.recv() == {"type": "pong"}
            break
        except (AssertionError, Closed, ConnectionError):
            assert time.monotonic() < deadline, "the freed slot was not reused"
            time.sleep(0.05)
    held.append(c)
    # The count stays right after many connects and disconnects.
    for _ in range(20):
        held.pop().close()
        time.sleep(0.02)
        deadline = time.monotonic() + 5
        while True:
            c = d.connect()
            try:
                c.send({"type": "ping"})
                if c.recv() == {"type": "pong"}:
                    break
            except (Closed, ConnectionError):
                pass
            assert time.monotonic() < deadline, "slot not freed"
            time.sleep(0.02)
        held.append(c)
    extra = d.connect()
    assert [m["code"] for m in extra.expect_closed()] == ["overloaded"]


def test_idle_connection_is_closed(attuned):
    d = attuned(idle_timeout_ms=400)
    idle = d.connect()
    busy = d.connect()
    t0 = time.monotonic()
    busy_ok = True
    while time.monotonic() - t0 < 1.2:
        busy.send({"type": "ping"})
        busy_ok &= busy.recv() == {"type": "pong"}
        time.sleep(0.1)
    assert busy_ok
    # The idle one was closed (without an error line) meanwhile.
    assert idle.expect_closed(timeout=2) == []
    # The busy one goes idle and is closed too; a line sent just before resets the timer.
    busy.send(utt("c-idle", 0))
    busy.wait_ack()
    t1 = time.monotonic()
    assert busy.expect_closed(timeout=3) == []
    assert time.monotonic() - t1 >= 0.25
    assert d.rows("SELECT COUNT(*) FROM utterances") == [(1,)]


def test_a_connection_waiting_on_backpressure_is_not_idle(attuned):
    """A client whose lines wait for room in the pipeline (the writer is blocked longer than
    idle_timeout_ms by another client's lines) is not idle: it is not closed, and its lines are
    stored once the writer moves on."""
    d = attuned(idle_timeout_ms=600, queue_lines=16)
    lock = db_connect(d.db)
    lock.execute("BEGIN IMMEDIATE")
    try:
        a = d.connect()
        a.send(*[utt("c-a", i) for i in range(16)])   # fills the pipeline
        time.sleep(0.2)
        b = d.connect()
        b.send(*[utt("c-b", i) for i in range(10)])   # read, but no room: waits
        time.sleep(1.8)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    a.wait_ack(16)
    assert b.wait_ack(10) == []
    assert d.rows("SELECT conversation_id, COUNT(*) FROM utterances GROUP BY 1 ORDER BY 1") == [
        ("c-a", 16), ("c-b", 10)]


# ---- line_timeout_ms ------------------------------------------------------------------------

def test_line_timeout_counts_from_each_lines_first_byte(attuned):
    """Lines that each end soon after their first byte are never timed out, however long the
    connection lasts; one that does not end gets line_too_long (its own line number), the
    lines before it are stored and acknowledged, and the connection is closed."""
    d = attuned(line_timeout_ms=1500, store_text="full")
    c = d.connect()
    t0 = time.monotonic()
    for i in range(8):
        data = json.dumps(utt("c-lt", i)).encode() + b"\n"
        c.sock.sendall(data[:20])
        time.sleep(0.3)
        c.send_raw(data[20:])
    c.wait_ack(8)
    assert time.monotonic() - t0 > 1.5, "the connection outlived line_timeout_ms"
    assert c.errors() == []
    c.send(utt("c-lt", 8))                     # pipelined just before the line that never ends
    t1 = time.monotonic()
    c.sock.sendall(json.dumps(utt("c-lt", 9)).encode()[:30])
    got = c.expect_closed(timeout=20)
    took = time.monotonic() - t1
    assert 1.2 <= took < 20, took
    errors = [m for m in got if m["type"] == "error"]
    assert [(e["line"], e["code"]) for e in errors] == [(10, "line_too_long")], got
    assert "line_timeout_ms" in errors[0]["message"] and "1500" in errors[0]["message"]
    assert c.acked == 9, got
    assert d.rows("SELECT seq FROM utterances ORDER BY seq") == [(i,) for i in range(9)]


def test_line_timeout_covers_a_line_already_cut_for_its_length(attuned):
    """A line cut at max_line_bytes is answered at once; if its newline never comes, the
    deadline of its first byte still closes the connection, naming the same line."""
    d = attuned(line_timeout_ms=1000, max_line_bytes=1024)
    c = d.connect()
    c.send({"type": "ping"})
    assert c.recv() == {"type": "pong"}
    c.sock.sendall(b"x" * 2000)
    err = c.recv()
    assert (err["type"], err["line"], err["code"]) == ("error", 2, "line_too_long"), err
    assert "max_line_bytes" in err["message"]
    got = []
    deadline = time.monotonic() + 20
    while not c.eof:
        assert time.monotonic() < deadline, "not closed; got %s" % got
        try:
            c.sock.sendall(b"x")
            got += c.poll()
        except (OSError, Closed):
            break
        time.sleep(0.2)
    got += c.expect_closed(timeout=10)
    assert [(m["type"], m["line"], m["code"]) for m in got] == [("error", 2, "line_too_long")]
    assert "line_timeout_ms" in got[0]["message"]


def test_line_timeout_zero_never_closes(attuned):
    d = attuned(line_timeout_ms=0, idle_timeout_ms=0)
    c = d.connect()
    line = json.dumps(utt("c-lt0", 0)).encode()
    c.sock.sendall(line[:10])
    assert c.quiet(1.5) == []
    c.send_raw(line[10:] + b"\n")
    assert c.wait_ack(1) == []


def test_a_bad_line_timeout_ms_stops_the_start(tmp_path):
    from conftest import ATTUNED
    for value, reason in (("-1", "out of range"), ("86400001", "out of range"),
                          ("30s", "not an integer")):
        ini = tmp_path / "bad.ini"
        ini.write_text("[server]\nidle_timeout_ms = 1000\nline_timeout_ms = %s\n" % value)
        p = subprocess.run([str(ATTUNED), "-c", str(ini), "--check-config"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, p
        assert "bad.ini:3: [server] line_timeout_ms: %s" % reason in p.stderr, p.stderr
        assert "0..86400000" in p.stderr


def test_a_line_that_cannot_be_stored_is_isolated_and_answered_internal(attuned):
    # A trigger (as an analyst might add) makes one utterance impossible to store: the rest of
    # its batch must still be stored and acked, and that line alone answered `internal`.
    d = attuned(batch_ms=200)
    c = d.connect()
    c.send({"type": "ping"})
    c.recv_type("pong")
    refuse_seq(d.db, 13)
    lines = [{"type": "utterance", "conversation_id": "iso", "seq": i, "speaker": "customer",
              "text": "turn %d" % i, "id": "u%d" % i} for i in range(30)]
    last = c.send(*lines)
    c.wait_ack(last, timeout=30)
    errors = c.errors()
    assert len(errors) == 1, errors
    assert errors[0]["code"] == "internal" and errors[0]["line"] == 2 + 13
    assert errors[0].get("id") == "u13", errors[0]  # errors echo the line's id (PROTOCOL.md)
    assert "turn" not in errors[0]["message"]  # never the text
    seqs = [s for (s,) in d.rows("SELECT seq FROM utterances ORDER BY seq")]
    assert seqs == [i for i in range(30) if i != 13]
    assert "cannot be stored" in d.log()

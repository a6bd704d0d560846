#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<name>/ (run it from
anywhere; it replaces the files it writes, named by content hash, and leaves others alone).

Seeds are the inputs a fuzzer would take long to find by itself: valid lines of every message
type, nested JSON, duplicate keys, NUL bytes raw and escaped, invalid UTF-8, huge numbers, CRLF,
emoji, and card numbers in the shapes people write and say them.
"""
import hashlib
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def luhn_complete(prefix, n):
    """A Luhn-valid number of n digits starting with prefix (the check digit is computed)."""
    body = (prefix + "4825513917206385419")[: n - 1]
    total = 0
    for i, ch in enumerate(reversed(body)):
        v = int(ch)
        if i % 2 == 0:
            v *= 2
            if v > 9:
                v -= 9
        total += v
    return body + str((10 - total % 10) % 10)


def write(name, items):
    d = CORPUS / name
    d.mkdir(parents=True, exist_ok=True)
    for item in items:
        data = item.encode() if isinstance(item, str) else bytes(item)
        (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


# ---- wire: one protocol line each -----------------------------------------------------------

def line(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


UTT = {"type": "utterance", "conversation_id": "c-1", "seq": 0, "speaker": "customer",
       "ts": "2026-11-25T10:00:04Z", "text": "This is the THIRD time I've been charged twice!!"}
WIRE = [
    line({"type": "hello", "token": "s3cret", "client": "bridge/2.1", "acks": "none"}),
    line({"type": "start", "conversation_id": "c-1", "channel": "chat", "queue": "billing",
          "agent_id": "a-7", "customer_id": "u-9", "started_at": "2026-11-25T10:00:00Z"}),
    line(UTT),
    line(dict(UTT, speaker="agent", seq=1, start_ms=1200, end_ms=5400, participant_id="p",
              id={"k": [1, "two"]}, text="I'm so sorry, that must be really frustrating.")),
    line({"type": "end", "conversation_id": "c-1", "ended_at": 1764064570000, "resolved": True,
          "csat": 4.5, "nps": 9, "escalated": False, "transferred": None}),
    line({"type": "outcome", "conversation_id": "c-1", "csat": 5,
          "resolved_at": "2026-11-25T12:00:00.5+05:30"}),
    line({"type": "conversation", "conversation_id": "c-2", "channel": "voice",
          "outcome": {"resolved": True, "csat": 1},
          "turns": [{"speaker": "customer", "text": "hi"},
                    {"speaker": "bot", "text": "hello", "seq": 7, "ts": 0},
                    {"speaker": "system", "text": "", "start_ms": 0, "end_ms": 0}]}),
    line({"type": "subscribe", "events": ["alert"], "filter": {"queue": "q", "agent_id": "a"}}),
    line({"type": "ping"}),
    line({"type": "rescore", "since": "2026-01-01T00:00:00Z"}),
    # CRLF is the framer's job, but the validator may see a lone \r at the end.
    line({"type": "ping"}) + "\r",
    # duplicate keys
    '{"type":"ping","type":"ping"}',
    '{"type":"utterance","conversation_id":"a","conversation_id":"b","speaker":"agent","text":"x"}',
    # nested JSON, under and over jansson's depth limit
    '{"type":"ping","x":' + "[" * 100 + "]" * 100 + "}",
    '{"type":"ping","x":' + "[" * 3000 + "]" * 3000 + "}",
    '{"type":"ping","id":' + '{"a":' * 50 + "1" + "}" * 50 + "}",
    "[" * 5000,
    # NUL bytes, raw and escaped
    b'{"type":"ping"}\x00',
    b'{"type":"utterance","conversation_id":"c\x00","speaker":"agent","text":"x"}',
    '{"type":"utterance","conversation_id":"c","speaker":"agent","text":"a\\u0000b"}',
    '{"type":"utt\\u0000erance"}',
    '{"type":"ping","k\\u0000":1}',
    '{"type":"hello","token":"s3cret\\u0000","id":["\\u0000"]}',
    '{"type":"conversation","conversation_id":"c","turns":[{"speaker":"agent","text":"x",'
    '"participant_id":"p\\u0000"}]}',
    # invalid UTF-8 and odd escapes
    b'{"type":"ping","x":"\xff\xfe"}',
    b'{"type":"ping","x":"\xc0\xaf"}',
    b'{"type":"ping","x":"\xed\xa0\x80"}',
    b'{"type":"utterance","conversation_id":"c","speaker":"agent","text":"\xe2\x82"}',
    '{"type":"ping","x":"\\ud800"}',
    '{"type":"ping","x":"\\ud83d\\ude20\\udc00"}',
    b"\xef\xbb\xbf" + line({"type": "ping"}).encode(),
    # numbers out of range
    line(dict(UTT, seq=2 ** 53)),
    '{"type":"utterance","conversation_id":"c","speaker":"agent","text":"x","seq":1e400}',
    '{"type":"utterance","conversation_id":"c","speaker":"agent","text":"x","seq":'
    '99999999999999999999999999}',
    '{"type":"utterance","conversation_id":"c","speaker":"agent","text":"x","seq":-0}',
    '{"type":"outcome","conversation_id":"c","csat":4.999999999999999999,"nps":-9223372036854775808}',
    '{"type":"end","conversation_id":"c","ended_at":253402300799999,"csat":1e-400}',
    '{"type":"conversation","conversation_id":"c","turns":[{"speaker":"agent","text":"x",'
    '"ts":-99999999999999999999}],"id":[1e999]}',
    '{"type":"ping","a":1e400,"b":-1e400,"c":99999999999999999999,"d":1e309,"e":9e999}',
    '{"type":"ping","a":1e400 junk}',
    '{1e400:1}',
    '[true99999999999999999999]',
    '{"type":"utterance","conversation_id":"c","speaker":"agent","text":"x","ts":-1,'
    '"start_ms":9223372036854775807,"end_ms":9223372036854775808}',
    # times
    line(dict(UTT, ts="9999-12-31T23:59:60.999999999-23:59")),
    line(dict(UTT, ts="0000-02-29T00:00:00+00:00")),
    line(dict(UTT, ts="2026-11-25t10:00:00z")),
    line(dict(UTT, ts="2026-11-25 10:00:00.Z")),
    # emoji and long ids
    line(dict(UTT, text="\U0001F620\U0001F621 \u2639\ufe0f thanks \U0001F44D\U0001F3FD",
              conversation_id="\u00e9" * 512)),
    line(dict(UTT, conversation_id="x" * 1025)),
    # unknown types that the error quotes: a newline, a character cut at 64 bytes
    '{"type":"utter\\nance"}',
    '{"type":"a' + "\u00e9" * 40 + '"}',
    # not objects, wrong types
    "42", "null", '"ping"', "[]", "", " ", "{}", '{"type":5}', '{"type":"teleport"}',
    '{"type":"subscribe","events":["alert",1]}',
    '{"type":"hello","token":null,"acks":"sometimes"}',
]

# ---- framer: byte 0 picks max_line_bytes (1 + b % 64), byte 1 seeds the chunking ------------

FRAMER = [
    b"\x07\x00" + b"a\nbb\r\nccc\r\r\n\n\r\n" + b"12345678\n" + b"123456789\n",
    b"\x07\x05" + b"12345678\r" + b"\n" + b"123456789" + b"x" * 40 + b"\nok\n",
    b"\x0f\x11" + line({"type": "ping"}).encode() + b"\r\n" + line(UTT).encode()[:15] + b"\n",
    b"\x3f\xff" + b"\x00\n\x00\x00\r\n\xff\xfe\n" + b"\r" * 70 + b"\n",
    b"\x00\x01" + b"\n" * 32,
    b"\x03\x02" + b"ab\r" + b"abc\r\n" + b"abcd\r" + b"\r\n" + b"no newline",
    b"\x20\x30" + ("\U0001F620" * 20 + "\n").encode(),
]

# ---- score: utterance texts -----------------------------------------------------------------

SCORE = [
    "This is the THIRD time I've been charged twice!!",
    "I'm so sorry, that must be really frustrating. Let me fix this for you right now.",
    "I am not angry, just disappointed... but honestly this is a joke of a company!!!",
    "I want to speak to your manager. I'm cancelling my account and calling my lawyer.",
    "That's not our policy, you should have read the terms. Calm down.",
    "GREAT. JUST GREAT. Thanks for NOTHING :( :( \U0001F621\U0001F621",
    "Oh wonderful, another hour on hold. Love that for me \U0001F643",
    "kind of sort of not really bad at all, the service wasn't the worst I guess",
    "I've called 5 times this week and nobody ever calls back!!!!!????",
    "Thank you so much, you've been incredibly helpful \u2764\ufe0f\U0001F44D\U0001F3FD",
    "\u00a1Qu\u00e9 desastre! \u0422\u0430\u043a \u043d\u0435\u043b\u044c\u0437\u044f. "
    "\u3053\u308c\u306f\u3072\u3069\u3044",
    "a" * 3000 + "!",
    "no " * 500,
    "!" * 200 + "?" * 200,
    "I" + " really" * 300 + " hate this",
    b"text with a NUL \x00 in the middle and \xff\xfe invalid bytes \xc3",
    b"\xf0\x9f\x98",
    "",
    " \t\r ",
    "WHY WON'T ANYONE HELP ME WITH MY ACCOUNT",
    "you idiots are f***ing useless, absolute sh1t service",
]

# ---- redact: card numbers in many shapes, among other secrets -------------------------------

V16 = luhn_complete("4", 16)
V15 = luhn_complete("37", 15)
V13 = luhn_complete("4", 13)
V19 = luhn_complete("62", 19)
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spoken(digits, zero="zero"):
    return " ".join(zero if d == "0" else WORDS[int(d)] for d in digits)


REDACT = [
    "my card is %s thanks" % V16,
    "card: %s %s %s %s" % (V16[:4], V16[4:8], V16[8:12], V16[12:]),
    "%s-%s-%s-%s" % (V16[:4], V16[4:8], V16[8:12], V16[12:]),
    "%s.%s.%s.%s" % (V16[:4], V16[4:8], V16[8:12], V16[12:]),
    "amex %s %s %s" % (V15[:4], V15[4:10], V15[10:]),
    "%s and %s" % (V13, V19),
    "it's " + spoken(V16) + " expiry oh four twenty six",
    "four five " + V16[2:8] + " " + spoken(V16[8:], zero="oh"),
    "card4" + V16[1:] + "x",
    V16 + V16,
    "0" * 13,
    "1" * 63 + V16,
    "ref " + "9" * 40 + " / " + V16,
    "mail me at jo.bloggs+card@example.co.uk or call +44 20 7946 0958 / 555-867-5309",
    "ssn 078-05-1120, iban GB82 WEST 1234 5698 7654 32, cvv 123, exp 04/27",
    "%s\u00a0%s\u00a0%s\u00a0%s" % (V16[:4], V16[4:8], V16[8:12], V16[12:]),
    "\uff14\uff11\uff11\uff11 fullwidth digits " + V16,
    b"\x00" + V16.encode() + b"\xff" + V13.encode(),
    "emoji \U0001F4B3 " + V16 + " \U0001F4B3",
    "%s, %s, %s, %s" % (V16[:4], V16[4:8], V16[8:12], V16[12:]),
    "%s\t%s/%s %s" % (V16[:4], V16[4:8], V16[8:12], V16[12:]),
]

if __name__ == "__main__":
    write("wire", WIRE)
    write("framer", FRAMER)
    write("score", SCORE)
    write("redact", REDACT)
    for name in ("wire", "framer", "score", "redact"):
        print(name, len(list((CORPUS / name).iterdir())))

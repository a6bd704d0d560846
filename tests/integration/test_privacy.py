"""What attuned stores and logs of what people say (store_text policies, redaction)."""
import random
import re

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def luhn_ok(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        v = int(ch)
        if i % 2:
            v = v * 2 - 9 if v * 2 > 9 else v * 2
        total += v
    return total % 10 == 0


def make_card(rng, prefix, n):
    body = prefix + "".join(rng.choice("0123456789") for _ in range(n - len(prefix) - 1))
    return next(body + c for c in "0123456789" if luhn_ok(body + c))


def shapes(card):
    """The ways people write a card number in chat and speech-to-text."""
    groups4 = [card[i:i + 4] for i in range(0, len(card), 4)]
    yield card
    yield " ".join(groups4)
    yield "-".join(groups4)
    yield " ".join(card)
    yield " ".join(WORDS[int(c)] for c in card)
    yield " ".join(("oh" if c == "0" else WORDS[int(c)]) if i % 2 else c
                   for i, c in enumerate(card))
    yield "%s %s %s" % (card[:4], card[4:10], card[10:])
    yield ".".join(card[i:i + 3] for i in range(0, len(card), 3))


def luhn_valid_runs(text):
    """Every Luhn-valid run of 13..19 digits, reading digits and spoken digits and skipping
    punctuation; a word that is not a digit breaks a run."""
    found = []
    digits = ""
    for tok in re.findall(r"[0-9]|[A-Za-z]+", text) + ["."]:
        if tok.isdigit():
            digits += tok
            continue
        low = tok.lower()
        if low in WORDS or low in ("oh", "o"):
            digits += str(WORDS.index(low)) if low in WORDS else "0"
            continue
        for n in range(13, 20):
            for i in range(len(digits) - n + 1):
                if luhn_ok(digits[i:i + n]):
                    found.append(digits[i:i + n])
        digits = ""
    return found


def test_card_corpus_leaves_no_luhn_valid_number_in_the_database(attuned):
    rng = random.Random(7)
    d = attuned()  # store_text = redacted is the default
    lines = []
    for prefix, n in (("4", 16), ("51", 16), ("37", 15), ("6011", 16), ("4", 13), ("35", 19)):
        for rep in range(4):
            for shape in shapes(make_card(rng, prefix, n)):
                text = rng.choice(["my card number is %s thanks", "%s", "it's %s, exp soon",
                                   "ok so the card is %s and the name is Sam"]) % shape
                assert luhn_valid_runs(text), text
                lines.append({"type": "utterance", "conversation_id": "c%d" % len(lines),
                              "speaker": "customer", "text": text})
    c = d.connect()
    c.send(*lines)
    c.wait_ack()
    stored = [t for (t,) in d.rows("select text from utterances")]
    assert len(stored) == len(lines) == 6 * 4 * 8
    leaks = [t for t in stored if luhn_valid_runs(t)]
    assert not leaks, leaks[:5]
    assert all("[CARD]" in t for t in stored)


def test_policies_and_scores(attuned, tmp_path):
    text = "Email me at sam@example.org, this is TERRIBLE service!"
    results = {}
    for policy in ("redacted", "full", "none"):
        d = attuned(db=tmp_path / ("%s.db" % policy), store_text=policy)
        c = d.connect()
        c.send({"type": "utterance", "conversation_id": "c", "seq": 0, "speaker": "customer",
                "text": text})
        c.wait_ack()
        results[policy] = d.rows("select text, compound, frustration_score from utterances")[0]
        d.stop()
    assert results["redacted"][0] == "Email me at [EMAIL], this is TERRIBLE service!"
    assert results["full"][0] == text
    assert results["none"][0] is None
    # Scores are computed before redaction: identical under every policy.
    assert results["redacted"][1:] == results["full"][1:] == results["none"][1:]


def test_logs_never_hold_transcript_text(attuned):
    secret = "zanzibar-quokka-7731"
    d = attuned(level="info")
    c = d.connect()
    c.send({"type": "utterance", "conversation_id": "c", "speaker": "customer",
            "text": "my password is %s and this is awful" % secret},
           {"type": "utterance", "conversation_id": "c", "speaker": "bogus", "text": secret},
           '{"type":"utterance","text":"%s' % secret)
    c.wait_ack()
    d.stop()
    assert secret not in d.log()
    assert len(c.errors()) == 2
    assert all(secret not in e["message"] for e in c.errors())

"""`attune score`, `attune explain` and `attune eval` driven as a user would run them."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("ATTUNE_BUILD", REPO / "build"))
ATTUNE = BUILD / "attune"
FIXTURES = REPO / "tests" / "fixtures"


def run(args, stdin=""):
    return subprocess.run([str(ATTUNE)] + args, input=stdin, capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def score_lines(lines, args=()):
    p = run(["score", *args], "".join(l + "\n" for l in lines))
    return p, [json.loads(l) for l in p.stdout.splitlines()]


def test_vader_reference_through_the_cli():
    # Every reference sentence, scored by the command, must give the reference numbers exactly.
    lines = []
    for name in ("rules.jsonl", "tweets.jsonl"):
        lines += (FIXTURES / "vader" / name).read_text().splitlines()
    p, out = score_lines(lines)
    assert p.returncode == 0, p.stderr
    assert len(out) == len(lines) == 4308
    bad = [o for o in out
           if (round(o["neg"], 3), round(o["neu"], 3), round(o["pos"], 3), round(o["compound"], 4))
           != (o["sentiment"]["neg"], o["sentiment"]["neu"], o["sentiment"]["pos"],
               o["sentiment"]["compound"])]
    assert not bad, bad[:3]


def test_input_fields_are_copied_byte_for_byte():
    line = '{"id":"u-1", "text":"Thanks, that is great", "weight":1.50, "meta":{"a":[1,2]}}'
    p = run(["score"], line + "\n")
    assert p.returncode == 0, p.stderr
    out = p.stdout.strip()
    # The original bytes (spacing, number spelling) survive; the scores follow.
    assert out.startswith(line[:-1] + ',"sentiment":')
    o = json.loads(out)
    assert o["weight"] == 1.5 and o["meta"] == {"a": [1, 2]} and o["id"] == "u-1"
    for key in ("sentiment", "empathy", "dismissive", "frustration", "frustration_score",
                "markers"):
        assert key in o


def test_output_keys_in_input_are_replaced_not_duplicated():
    p, out = score_lines(['{"text":"good","sentiment":"stale","markers":5}'])
    assert p.returncode == 0
    assert isinstance(out[0]["sentiment"], dict)
    assert isinstance(out[0]["markers"], list)
    assert p.stdout.count('"sentiment"') == 1


def test_speaker_default_and_flag():
    text = "I'm so sorry about that, I understand how frustrating this is."
    _, as_customer = score_lines([json.dumps({"text": text})])
    _, as_agent = score_lines([json.dumps({"text": text})], ["--speaker", "agent"])
    assert as_customer[0]["empathy"] == []  # empathy is for agent and bot turns
    assert "apology" in as_agent[0]["empathy"]
    assert as_agent[0]["frustration_score"] is None
    assert 0.0 <= as_customer[0]["frustration_score"] <= 1.0


def test_markers_have_offsets_and_pattern_ids():
    text = "I want to speak to a manager right now"
    _, out = score_lines([json.dumps({"speaker": "customer", "text": text})])
    ms = [m for m in out[0]["markers"] if m["category"] == "escalation_request"]
    assert ms, out[0]
    m = ms[0]
    assert m["family"] == "frustration" and m["pattern"]
    assert 0 <= m["start"] < m["end"] <= len(text.encode())
    assert "manager" in text.encode()[m["start"]:m["end"]].decode()


def test_protocol_messages_and_conversations():
    lines = [
        json.dumps({"type": "start", "conversation_id": "c1"}),
        json.dumps({"type": "utterance", "conversation_id": "c1", "seq": 4, "speaker": "agent",
                    "text": "Let me fix that for you."}),
        json.dumps({"type": "conversation", "conversation_id": "c2", "turns": [
            {"speaker": "customer", "text": "This is ridiculous."},
            {"speaker": "agent", "text": "I apologize.", "seq": 7}]}),
        json.dumps({"type": "end", "conversation_id": "c1"}),
    ]
    p, out = score_lines(lines)
    assert p.returncode == 0, p.stderr
    assert len(out) == 3  # start and end carry no text
    assert out[0]["seq"] == 4 and out[0]["conversation_id"] == "c1"
    assert [(o["conversation_id"], o["seq"]) for o in out[1:]] == [("c2", 0), ("c2", 7)]
    assert out[1]["speaker"] == "customer"


def test_plain_text_mode():
    p, out = score_lines(["The service was good.", "", "awful"], ["--text"])
    assert p.returncode == 0
    assert [o["text"] for o in out] == ["The service was good.", "", "awful"]
    assert out[0]["sentiment"]["compound"] == 0.4404
    assert out[1]["sentiment"] == {"neg": 0.0, "neu": 0.0, "pos": 0.0, "compound": 0.0}


@pytest.mark.parametrize("line,message", [
    ("not json", "invalid JSON"),
    ("[1,2]", "expected a JSON object"),
    ('{"speaker":"agent"}', 'missing field "text"'),
    ('{"text":42}', 'field "text" must be a string'),
    ('{"text":"hi","speaker":"robot"}', 'field "speaker"'),
    ('{"type":"bogus","text":"hi"}', 'unknown type "bogus"'),
    ('{"type":"conversation","turns":[]}', 'missing field "conversation_id"'),
    ('{"type":"conversation","conversation_id":"c","turns":[{"speaker":"agent"}]}',
     'turns[0]: missing field "text"'),
    ('{"text":"a","text":"b"}', "duplicate"),
])
def test_bad_lines_are_reported_with_line_numbers_and_scoring_continues(line, message):
    good = '{"text":"fine"}'
    p = run(["score"], good + "\n" + line + "\n" + good + "\n")
    assert p.returncode == 1
    out = [json.loads(l) for l in p.stdout.splitlines()]
    assert len(out) == 2  # both good lines scored, in order
    err = p.stderr.strip().splitlines()
    assert len(err) == 1
    assert "<stdin>:2:" in err[0] and message in err[0], err


def test_files_are_scored_in_order_and_missing_files_reported(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"id":1,"text":"good"}\n{"id":2,"text":"bad"}\n')
    p = run(["score", str(a), str(tmp_path / "missing.jsonl"), str(a)])
    assert p.returncode == 1
    assert [json.loads(l)["id"] for l in p.stdout.splitlines()] == [1, 2, 1, 2]
    assert "missing.jsonl" in p.stderr


def test_unknown_speaker_flag_is_a_usage_error():
    p = run(["score", "--speaker", "robot"], "")
    assert p.returncode == 2 and "robot" in p.stderr


def test_explain_shows_rules_and_suppressed_candidates():
    p = run(["explain", "--speaker", "customer",
             "I'm not going to cancel my account, but the service is VERY bad!!"])
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "compound" in out
    assert "bad" in out and "-2.5" in out  # the lexicon valence of "bad"
    assert "negated" in out  # the churn threat was suppressed by "not"
    assert "shouting" in out


def test_explain_names_wrong_speaker():
    p = run(["explain", "--speaker", "customer", "sorry, what was the number?"])
    assert p.returncode == 0
    assert "wrong speaker" in p.stdout


def test_broken_lexicon_names_file_line_and_reason(tmp_path):
    import shutil
    lex = tmp_path / "lexicons"
    shutil.copytree(REPO / "lexicons", lex)
    with open(lex / "vader" / "vader_lexicon.txt", "a") as f:
        f.write("brokenline-without-a-tab\n")
    p = run(["score", "--lexicons", str(lex)], '{"text":"hi"}\n')
    assert p.returncode != 0
    assert "vader_lexicon.txt:" in p.stderr


@pytest.mark.parametrize("requires", ["digits:0", "digits:", "digits:9x", "digits:65", "digit9"])
def test_bad_redaction_requirement_is_named(tmp_path, requires):
    import shutil
    lex = tmp_path / "lexicons"
    shutil.copytree(REPO / "lexicons", lex)
    rows = (lex / "redact.tsv").read_text().splitlines()
    at = next(i for i, r in enumerate(rows) if r.startswith("ssn\t"))
    f = rows[at].split("\t")
    f[3] = requires
    rows[at] = "\t".join(f)
    (lex / "redact.tsv").write_text("\n".join(rows) + "\n")
    p = run(["score", "--lexicons", str(lex)], '{"text":"hi"}\n')
    assert p.returncode != 0
    assert f"redact.tsv:{at + 1}: unknown requirement \"{requires}\"" in p.stderr, p.stderr


def test_eval_reports_every_category_and_family():
    p = run(["eval", "--format", "json", str(FIXTURES / "markers" / "dev.jsonl")])
    assert p.returncode == 0, p.stderr
    o = json.loads(p.stdout)
    assert o["utterances"] == 400
    assert len(o["categories"]) == 23
    fams = {f["family"]: f for f in o["families"]}
    assert set(fams) == {"empathy", "dismissive", "frustration"}
    for f in fams.values():
        tp, fp, fn = f["tp"], f["fp"], f["fn"]
        p_ = tp / (tp + fp) if tp + fp else 0
        r_ = tp / (tp + fn) if tp + fn else 0
        f1 = 2 * p_ * r_ / (p_ + r_) if p_ + r_ else 0
        assert abs(f["micro_f1"] - f1) < 1e-3


# Texts at the edges of what the prefilter reasons about: literals at word starts and ends,
# inside longer words, before punctuation, at the end of the text, next to letters and symbols
# outside ASCII, in upper case, and across the speakers.
PREFILTER_EDGES = [
    "what a joke", "what a joke.", "what a joke!!", "this is a con", "contact us", "a con, honestly",
    "total shambles—again", "a complete farce…", "that's a joke😡", "a jokeé", "JOKE. A JOKE",
    "I get it", "I getting it", "just so I get that", "to make sure I understood", "I understood_",
    "so sorry", "soooo sorry", "I apologise", "apologize", "my apologies!", "I'm furious",
    "I'm furiousé", "im furious", "I am livid!!!", "thanks for nothing", "thx for nada",
    "great, another 2 hour wait", "a 45 minute wait", "45minutes wait", "hour-long queue",
    "I'll sort this out", "let me look into it", "I'll fix that", "I'll fixate", "we'll see",
    "your money is safe", "you'remoney", "manager now", "supervisor please", "cancel my contract",
    "I'm leaving", "I want to cancel", "'quoted joke'", "“what a joke”", "he's furious",
    "thanks, that was SO helpful", "thanks, that was so helpful", "Thanks. SOOOO helpful",
    "really, REALLY useful", "That was SO helpful 🙄", "thank you so much, SO helpful",
    # A group's texts that may occur inside a word ("n't", "manager") are looked for only
    # when none of its word-start texts occurred (lib/markers.c, late texts).
    "Great, the app doesn't work", "Wonderful, it isn’t here", "Brilliant. Still waiting",
    "Brilliant, it wasnt", "put me through to your supervisor", "can you get me amanager",
    "put me through to your supervisors now", "get me the teamleader", "fetch your boss",
]


def test_unanchored_match_may_start_at_its_last_literal(tmp_path):
    # A pattern without an anchor is searched for only up to the last position where a literal
    # of each of its required groups occurred (PCRE2's offset limit): a match may start exactly
    # there, and must still be found. The optional number gives the pattern no lead, so it is
    # not anchored.
    lex = tmp_path / "lexicons"
    shutil.copytree(REPO / "lexicons", lex)
    with open(lex / "markers" / "frustration.tsv", "a") as f:
        f.write("fru-test-bound\tmatch\tanger\t*\t(?:\\d+ )?\\bzorbly indeed\\b\n")
    texts = ["zorbly indeed", "we are zorbly indeed", "zorbly indeed, zorbly indeed",
             "so 12 zorbly indeed"]
    stdin = "".join(json.dumps({"speaker": "customer", "text": t}) + "\n" for t in texts)
    for prefilter in ("on", "off"):
        p = subprocess.run([str(ATTUNE), "score"], input=stdin, capture_output=True, text=True,
                           cwd=REPO, timeout=120,
                           env={**os.environ, "ATTUNE_LEXICONS": str(lex),
                                "ATTUNE_PREFILTER": prefilter})
        assert p.returncode == 0, p.stderr
        out = [json.loads(l) for l in p.stdout.splitlines()]
        spans = [[(m["start"], m["end"]) for m in o["markers"] if m["pattern"] == "fru-test-bound"]
                 for o in out]
        assert spans == [[(0, 13)], [(7, 20)], [(0, 13), (15, 28)], [(3, 19)]], (prefilter, spans)


def test_prefilter_changes_no_result():
    # The literal prefilter only decides which patterns are worth running, and the rewrite of
    # lib/regex.c only how PCRE2 tries their alternatives; with both turned off
    # (ATTUNE_PREFILTER=off: every pattern runs, as written, on every utterance) every result
    # must be the same, on the dev set, the held-out cases, a generated corpus and the edge
    # texts above.
    lines = (FIXTURES / "markers" / "dev.jsonl").read_text().splitlines()
    lines += (REPO / "tests" / "cases" / "markers.jsonl").read_text().splitlines()
    gen = subprocess.run(["/usr/bin/python3", str(REPO / "bench" / "gen_corpus.py"), "-n", "400",
                          "--seed", "7"], capture_output=True, text=True, check=True)
    lines += gen.stdout.splitlines()
    for text in PREFILTER_EDGES:
        for speaker in ("customer", "agent"):
            lines.append(json.dumps({"speaker": speaker, "text": text}))
    stdin = "".join(l + "\n" for l in lines)
    on = subprocess.run([str(ATTUNE), "score"], input=stdin, capture_output=True, text=True,
                        cwd=REPO, timeout=300)
    off = subprocess.run([str(ATTUNE), "score"], input=stdin, capture_output=True, text=True,
                         cwd=REPO, timeout=300, env={**os.environ, "ATTUNE_PREFILTER": "off"})
    assert on.returncode == 0 and off.returncode == 0, (on.stderr, off.stderr)
    a, b = on.stdout.splitlines(), off.stdout.splitlines()
    assert len(a) == len(b) == len(lines)
    differ = [(x, y) for x, y in zip(a, b) if x != y]
    assert not differ, differ[:3]
    # The edge texts do exercise the markers (the test would be empty otherwise).
    assert sum('"markers":[]' not in x for x in a[-2 * len(PREFILTER_EDGES):]) > 20

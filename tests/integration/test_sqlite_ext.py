"""The SQLite loadable extension (build/attune_sqlite.so), loaded into the real sqlite3 shell
(Python's sqlite3 module here cannot load extensions): its scores equal `attune score`'s, and its
statistics equal the same statistics computed in Python (ANALYTICS.md section 3: Pearson r,
Spearman rho with average ranks for ties, type 7 quantiles).
"""
import json
import math
import os
import random
import sqlite3
import subprocess

import pytest

from conftest import BUILD, REPO

SQLITE3 = "/usr/bin/sqlite3"
EXT = BUILD / "attune_sqlite.so"
ATTUNE = BUILD / "attune"

pytestmark = pytest.mark.skipif(not os.path.exists(SQLITE3), reason="no sqlite3 shell")


def sanitizer_env():
    """An extension built with the sanitizers (make asan, make tsan) needs their runtimes loaded
    first into the uninstrumented sqlite3 shell."""
    out = subprocess.run(["ldd", str(EXT)], capture_output=True, text=True).stdout
    env = {}
    preload = [line.split("=>")[1].split()[0] for line in out.splitlines()
               if ("libasan" in line or "libubsan" in line or "libtsan" in line) and "=>" in line]
    if preload:
        env["LD_PRELOAD"] = " ".join(preload)
    return env


def sql(statements, env=None, db=":memory:", check=True):
    """Runs statements in the sqlite3 shell with the extension loaded; returns the rows of the
    last statement as a list of dicts (JSON output mode)."""
    e = dict(os.environ)
    e.pop("ATTUNE_LEXICONS", None)
    e.update(sanitizer_env())
    e.update(env or {})
    script = ".bail on\n.load %s\n.mode json\n%s\n" % (str(EXT)[:-3], statements)
    p = subprocess.run([SQLITE3, str(db)], input=script, capture_output=True, text=True, env=e,
                       timeout=60)
    if not check:
        return p
    assert p.returncode == 0, p.stderr
    out = p.stdout.strip()
    return json.loads(out) if out else []


def sql_string(s):
    return "'" + s.replace("'", "''") + "'"


TEXTS = [
    ("customer", "This is the THIRD time I have been charged twice!!"),
    ("agent", "I am so sorry, that must be really frustrating. Let me fix this for you right now."),
    ("customer", "I'm not going to cancel, but this is RIDICULOUS!!"),
    ("agent", "Calm down, that's our policy. As I already said, there's nothing I can do."),
    ("customer", "Thanks so much, that fixed it :)"),
    ("bot", "I understand. Thank you for your patience."),
    ("system", "Call transferred to queue billing."),
    ("customer", "Let me speak to a manager, I'm switching to another provider."),
    ("customer", "Ünïcödé tëxt with emoji \U0001F621 and a quote: \"calm down\""),
    ("customer", ""),
]


def attune_score(texts):
    lines = "".join(json.dumps({"speaker": s, "text": t}) + "\n" for s, t in texts)
    p = subprocess.run([str(ATTUNE), "score"], input=lines, capture_output=True, text=True,
                       env={**os.environ, "ATTUNE_LEXICONS": str(REPO / "lexicons")})
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def test_attune_score_equals_the_attune_command():
    want = attune_score(TEXTS)
    values = " UNION ALL ".join(
        "SELECT %d AS i, attune_score(%s, %s) AS score, attune_sentiment(%s) AS compound"
        % (i, sql_string(t), sql_string(s), sql_string(t)) for i, (s, t) in enumerate(TEXTS))
    rows = sql("SELECT * FROM (%s) ORDER BY i;" % values)
    assert len(rows) == len(TEXTS)
    for row, w, (speaker, text) in zip(rows, want, TEXTS):
        got = json.loads(row["score"])
        for key in ("text", "speaker"):
            w.pop(key)
        assert got == w, text
        assert list(got) == ["sentiment", "empathy", "dismissive", "frustration",
                             "frustration_score", "markers"]
        assert row["compound"] == w["sentiment"]["compound"], text
        if speaker != "customer":
            assert got["frustration_score"] is None


def test_scoring_functions_on_a_table():
    agent = "I completely understand, let me fix that."
    customer = "I want to cancel my account, this is ridiculous!"
    want_agent, want_customer = attune_score([("agent", agent), ("customer", customer)])
    rows = sql("""
        CREATE TABLE u (speaker TEXT, text TEXT);
        INSERT INTO u VALUES ('agent', %s), ('customer', NULL), (NULL, %s);
        SELECT attune_sentiment(text) AS c,
               json_extract(attune_score(text, speaker), '$.empathy') AS emp,
               json_extract(attune_score(text, speaker), '$.frustration') AS fru,
               json_type(json_object('s', attune_score(text)), '$.s') AS nested,
               attune_model_id() AS model
        FROM u;""" % (sql_string(agent), sql_string(customer)))
    assert json.loads(rows[0]["emp"]) == want_agent["empathy"]
    assert rows[1]["c"] is None and rows[1]["emp"] is None
    # A NULL speaker scores as a customer, as `attune score` does without one.
    assert json.loads(rows[2]["fru"]) == want_customer["frustration"]
    # The JSON subtype: json_object() nests the result as an object, not a string.
    assert rows[0]["nested"] == "object"
    assert rows[0]["model"].startswith("m-") and len(rows[0]["model"]) == 18


def test_scoring_errors_are_sql_errors(tmp_path):
    p = sql("SELECT attune_score('hi', 'robot');", check=False)
    assert p.returncode != 0 and "speaker must be" in p.stderr
    missing = tmp_path / "nowhere"
    p = sql("SELECT attune_sentiment('hi');", env={"ATTUNE_LEXICONS": str(missing)},
            check=False)
    assert p.returncode != 0
    assert "cannot build the scoring model from %s" % missing in p.stderr, p.stderr
    assert "ATTUNE_LEXICONS" in p.stderr
    # Statistics need no model.
    assert sql("SELECT median(x) AS m FROM (SELECT 1 AS x UNION ALL SELECT 3);",
               env={"ATTUNE_LEXICONS": str(missing)}) == [{"m": 2.0}]


def test_model_from_the_environment_matches_the_daemon_lexicons():
    env = {"ATTUNE_LEXICONS": str(REPO / "lexicons")}
    (row,) = sql("SELECT attune_model_id() AS m;", env=env)
    (row2,) = sql("SELECT attune_model_id() AS m;")  # found beside build/
    out = subprocess.run([str(BUILD / "attuned"), "--check-config", "--lexicons",
                          str(REPO / "lexicons")], capture_output=True, text=True).stdout
    assert row["m"] == row2["m"] and "model %s" % row["m"] in out


# ---- statistics --------------------------------------------------------------------------

def pearson(x, y):
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / math.sqrt(sxx * syy)


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x, y):
    return pearson(ranks(x), ranks(y))


def quantile(v, p):
    if not v:
        return None
    v = sorted(v)
    h = (len(v) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (h - lo) * (v[hi] - v[lo])


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_statistics_equal_python_by_group():
    rnd = random.Random(7)
    rows = []
    for g in range(6):
        n = [0, 1, 2, 5, 40, 200][g]
        for _ in range(n):
            x = rnd.choice([None, rnd.randint(1, 5), rnd.random() * 100])
            y = rnd.choice([None, rnd.randint(1, 5), round(rnd.gauss(0, 1), 1)])
            rows.append((g, x, y))
    rows.append((6, 1, 2))
    rows.append((6, 1, 3))  # constant x: no correlation
    values = ",".join("(%d,%s,%s)" % (g, "NULL" if x is None else repr(float(x)),
                                       "NULL" if y is None else repr(float(y)))
                      for g, x, y in rows)
    got = sql("""
        CREATE TABLE t (g INTEGER, x REAL, y REAL);
        INSERT INTO t VALUES %s;
        SELECT g, corr(x, y) AS r, spearman(x, y) AS rho, median(x) AS med,
               percentile(x, 90) AS p90, percentile(y, 0) AS p0, percentile(y, 100) AS p100,
               percentile(x, 37.5) AS p375
        FROM t GROUP BY g ORDER BY g;""" % values)
    for row in got:
        g = row["g"]
        pairs = [(x, y) for gg, x, y in rows if gg == g and x is not None and y is not None]
        xs = [x for gg, x, _ in rows if gg == g and x is not None]
        ys = [y for gg, _, y in rows if gg == g and y is not None]
        px, py = [float(a) for a, _ in pairs], [float(b) for _, b in pairs]
        assert close(row["r"], pearson(px, py)), (g, row)
        assert close(row["rho"], spearman(px, py) if len(pairs) >= 2 else None), (g, row)
        assert close(row["med"], quantile(xs, 0.5)), (g, row)
        assert close(row["p90"], quantile(xs, 0.9)), (g, row)
        assert close(row["p0"], quantile(ys, 0.0)), (g, row)
        assert close(row["p100"], quantile(ys, 1.0)), (g, row)
        assert close(row["p375"], quantile(xs, 0.375)), (g, row)
    assert [r["g"] for r in got] == [1, 2, 3, 4, 5, 6]  # group 0 has no rows
    assert got[-1]["r"] is None and got[-1]["rho"] is None


def test_statistics_of_no_rows_are_null_and_text_numbers_count():
    (row,) = sql("""SELECT corr(x, x) AS r, spearman(x, x) AS rho, median(x) AS m,
                           percentile(x, 50) AS p FROM (SELECT 1 AS x) WHERE x > 1;""")
    assert row == {"r": None, "rho": None, "m": None, "p": None}
    (row,) = sql("SELECT median(x) AS m, corr(x, y) AS r FROM (SELECT '2' AS x, 1 AS y"
                 " UNION ALL SELECT '4', 2 UNION ALL SELECT 9, 3);")
    assert row["m"] == 4.0 and close(row["r"], pearson([2, 4, 9], [1, 2, 3]))


@pytest.mark.parametrize("query, message", [
    ("SELECT median(x) FROM (SELECT 'abc' AS x);", "median(): argument 1 is not a number"),
    ("SELECT corr(1, x) FROM (SELECT x'00' AS x);", "corr(): argument 2 is not a number"),
    ("SELECT percentile(1, 101);", "from 0 to 100"),
    ("SELECT percentile(1, NULL);", "from 0 to 100"),
    ("SELECT percentile(x, x) FROM (SELECT 1 AS x UNION ALL SELECT 2);", "same number"),
])
def test_statistics_reject_bad_arguments(query, message):
    p = sql(query, check=False)
    assert p.returncode != 0 and message in p.stderr, p.stderr


def test_on_a_daemon_database(attuned):
    """What an analyst does: load the extension on the store and relate behaviour to CSAT."""
    d = attuned(store_text="full")
    c = d.connect()
    rnd = random.Random(3)
    for i in range(12):
        empathic = i % 3 != 0
        c.send({"type": "conversation", "conversation_id": "c%d" % i,
                "turns": [{"speaker": "customer", "text": "This is ridiculous, still broken!"},
                          {"speaker": "agent",
                           "text": "I am so sorry, that must be frustrating. Let me fix it."
                           if empathic else "That's our policy."}],
                "outcome": {"csat": rnd.randint(3, 5) if empathic else rnd.randint(1, 3)}})
    c.wait_ack()
    c.close()
    assert d.stop() == 0
    (row,) = sql("""SELECT corr(csat, empathy_score) AS r, spearman(csat, empathy_score) AS rho,
                           median(csat) AS m, COUNT(*) AS n,
                           SUM(attune_score(u.text, u.speaker) ->> '$.sentiment.compound'
                               = u.compound) AS same
                    FROM conversations JOIN utterances u USING (conversation_id)
                    WHERE u.seq = 0;""", db=d.db)
    con = sqlite3.connect(str(d.db))
    pairs = con.execute("SELECT csat, empathy_score FROM conversations"
                        " WHERE empathy_score IS NOT NULL").fetchall()
    csat = [r[0] for r in con.execute("SELECT csat FROM conversations")]
    con.close()
    assert close(row["r"], pearson([a for a, _ in pairs], [b for _, b in pairs]))
    assert close(row["rho"], spearman([a for a, _ in pairs], [b for _, b in pairs])
                 if len(pairs) >= 2 else None)
    assert close(row["m"], quantile(csat, 0.5))
    assert row["n"] == 12 and row["same"] == 12

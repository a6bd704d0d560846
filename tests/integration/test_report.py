"""`attune report`: the fleet reports of ANALYTICS.md section 3 and the views of
schema/0003_views.sql.

A database is built by applying schema/*.sql in order and inserting conversations (with every
section-2 metric column) and agent utterances directly, from a seeded generator. Every number
the reports print is checked against an independent computation in this file (Pearson,
Spearman with average ranks, Fisher interval, type-7 quantiles, least squares), never against
hard-coded figures; the views are checked against the same computations. One test runs the
real attuned to show that its migrations create the views and that a report reads a database
the daemon holds.
"""
import csv
import io
import json
import math
import os
import random
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from conftest import BUILD, REPO, utt
from test_metrics import METRIC_COLUMNS

ATTUNE = BUILD / "attune"
REPORTS = ["resolution-time", "satisfaction", "escalations", "repeat-contacts", "agents",
           "fatigue", "trend"]
DAY_MS = 86400000
BASE = datetime(2024, 5, 1, tzinfo=timezone.utc)
BASE_MS = int(BASE.timestamp() * 1000)

# ANALYTICS.md section 2, every metric but csat: what `satisfaction` correlates with CSAT.
SAT_METRICS = [c for c in METRIC_COLUMNS if c not in ("csat", "ended")]
DIMENSIONS = {"agent": "agent_id", "queue": "queue", "channel": "channel", "day": "day"}
MINIMISING, DEFLECTING, ACKNOWLEDGEMENT = 1 << 8, 1 << 9, 1 << 0


# ---- independent statistics -------------------------------------------------------------------

def mean(xs):
    return sum(xs) / len(xs) if xs else None


def pearson(xs, ys):
    n = len(xs)
    if n < 2:
        return None
    mx, my = mean(xs), mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if len(set(xs)) == 1 or len(set(ys)) == 1:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return sxy / math.sqrt(sxx * syy)


def average_ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1   # mean of the 1-based ranks i+1 .. j+1
        i = j + 1
    return ranks


def spearman(xs, ys):
    return pearson(average_ranks(xs), average_ranks(ys))


def fisher(r, n):
    if r is None or n < 4:
        return None, None
    if abs(r) == 1:
        return r, r
    z, half = math.atanh(r), 1.96 / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def quantile7(xs, p):
    """R's quantile(type = 7)."""
    s = sorted(xs)
    h = (len(s) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def slope(xs, ys):
    if len(xs) < 2:
        return None
    mx, my = mean(xs), mean(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
            / sum((x - mx) ** 2 for x in xs))


def day_of(ms):
    return datetime.fromtimestamp(ms // 1000, timezone.utc).date().isoformat()


def tier(rate):
    if rate is None:
        return "no opportunity"
    return "low" if rate < 1 / 3 else "medium" if rate < 2 / 3 else "high"


def empathy_response(c):
    if not c["empathy_opportunities"]:
        return "no opportunity"
    return "with" if c["empathy_responses"] > 0 else "without"


# ---- the database ---------------------------------------------------------------------------

def maybe(rng, value, p_null=0.15):
    return None if rng.random() < p_null else value


def generate():
    """Conversations as dicts of conversations columns, plus each one's agent turn masks."""
    rng = random.Random(20240501)
    convs = []
    for i in range(90):
        started = BASE_MS + rng.randrange(5) * DAY_MS + rng.randrange(8 * 3600) * 1000 \
            + 8 * 3600 * 1000
        opp = rng.choice([0, 0, 1, 2, 3, 4])
        resp = rng.randint(0, opp)
        agent_turns = maybe(rng, rng.randint(0, 6), 0.05)
        resolved = maybe(rng, rng.choice([0, 1, 1]), 0.1)
        q = [maybe(rng, round(rng.uniform(-1, 1), 4), 0.1) for _ in range(4)]
        c = {
            "conversation_id": "c%03d" % i,
            "channel": rng.choice(["chat", "chat", "voice", "email"]),
            "queue": maybe(rng, rng.choice(["billing", "tech"]), 0.1),
            "agent_id": maybe(rng, rng.choice(["a1", "a2", "a3", "ä4"]), 0.05),
            "customer_id": maybe(rng, "u%02d" % rng.randrange(30), 0.1),
            "started_at": maybe(rng, started, 0.04),
            "resolved": resolved,
            # A few integer CSATs and many ties: Spearman's average ranks matter.
            "csat": maybe(rng, float(rng.randint(1, 5)), 0.25),
            "nps": maybe(rng, rng.randint(0, 10), 0.5),
            "escalated": maybe(rng, rng.choice([0, 0, 0, 1]), 0.2),
            "transferred": maybe(rng, rng.choice([0, 1]), 0.3),
            "turns": (agent_turns or 0) + rng.randint(1, 6),
            "agent_turns": agent_turns,
            "customer_turns": rng.randint(1, 6),
            "duration_ms": maybe(rng, rng.randrange(60000, 3600000)),
            "first_response_ms": maybe(rng, rng.randrange(1000, 120000)),
            "avg_response_ms": maybe(rng, rng.uniform(1000, 90000)),
            "max_response_ms": maybe(rng, rng.randrange(1000, 300000)),
            "customer_sentiment_q1": q[0], "customer_sentiment_q2": q[1],
            "customer_sentiment_q3": q[2], "customer_sentiment_q4": q[3],
            "customer_sentiment_start": q[0], "customer_sentiment_end": q[3],
            "customer_sentiment_min": maybe(rng, round(rng.uniform(-1, 0), 4)),
            "customer_sentiment_mean": maybe(rng, round(rng.uniform(-1, 1), 4), 0.1),
            "sentiment_trend": None if q[0] is None or q[3] is None else q[3] - q[0],
            "empathy_opportunities": opp,
            "empathy_responses": resp,
            "empathy_response_rate": resp / opp if opp else None,
            "solution_before_acknowledgement": rng.randint(0, opp),
            "empathy_score": maybe(rng, round(rng.uniform(-100, 100), 1), 0.2),
            "frustration_peak": maybe(rng, round(rng.random(), 4), 0.1),
            "frustration_end": maybe(rng, round(rng.random(), 4), 0.1),
            "recovery": maybe(rng, round(rng.uniform(0, 2), 4)),
            "escalation_requested": rng.choice([0, 0, 1]),
            "churn_threat": rng.choice([0, 0, 0, 1]),
            "legal_threat": 0,          # constant: no correlation, whatever n
            "abuse": rng.choice([0, 0, 0, 0, 1]),
            "interruptions_agent": None,   # never known: n = 0
            "interruptions_customer": None,
            "talk_ratio_agent": maybe(rng, rng.random(), 0.6),
            "silence_ms": maybe(rng, rng.randrange(0, 60000), 0.6),
            "resolution_ms": None,
        }
        if resolved == 1:
            c["resolution_ms"] = maybe(rng, rng.randrange(30000, 4 * 3600000), 0.1)
        masks = [rng.choice([0, 0, MINIMISING, DEFLECTING | ACKNOWLEDGEMENT, ACKNOWLEDGEMENT])
                 for _ in range(agent_turns or 0)]
        convs.append((c, masks))
    # A customer whose next contacts come 1 day, exactly 7 days and 8 days after the previous.
    first = convs[0][0]
    first.update(customer_id="u-repeat", started_at=BASE_MS + 9 * 3600 * 1000)
    for k in range(3):
        c, _ = convs[k + 1]
        c.update(customer_id="u-repeat",
                 started_at=first["started_at"] + sum([1, 7, 8][:k + 1]) * DAY_MS)
    # A shift with falling empathy: a9's six conversations on day 2, the third without a rate;
    # and a10's four falling ones on day 2 (too few to flag).
    rates = [1.0, 0.75, None, 0.5, 0.5, 0.25, 0.0]
    for k, rate in enumerate(rates):
        c, _ = convs[10 + k]
        opp = 0 if rate is None else 4
        c.update(agent_id="a9", started_at=BASE_MS + 2 * DAY_MS + (9 + k) * 3600 * 1000,
                 empathy_opportunities=opp, empathy_responses=int((rate or 0) * 4),
                 empathy_response_rate=rate)
    for k, rate in enumerate([1.0, 0.5, 0.5, 0.0]):
        c, _ = convs[20 + k]
        c.update(agent_id="a10", started_at=BASE_MS + 2 * DAY_MS + (9 + k) * 3600 * 1000,
                 empathy_opportunities=2, empathy_responses=int(rate * 2),
                 empathy_response_rate=rate)
    # Two conversations of one agent starting at the same millisecond: ordered by id.
    for k in (30, 31):
        convs[k][0].update(agent_id="a3", started_at=BASE_MS + 3 * DAY_MS + 12 * 3600 * 1000)
    return convs


def build_db(path, convs):
    con = sqlite3.connect(str(path))
    for n, sql in enumerate(sorted((REPO / "schema").glob("[0-9][0-9][0-9][0-9]_*.sql"))):
        con.executescript(sql.read_text())
        con.execute("PRAGMA user_version = %d" % (n + 1))
    for c, masks in convs:
        cols = list(c)
        con.execute("INSERT INTO conversations (%s) VALUES (%s)"
                    % (", ".join(cols), ", ".join("?" * len(cols))), [c[k] for k in cols])
        seq = 0
        # A customer turn with a dismissive bit must not count: only agent turns do.
        con.execute("INSERT INTO utterances (conversation_id, seq, speaker, neg, neu, pos,"
                    " compound, model_id, category_mask) VALUES (?, ?, 'customer', 0, 1, 0, 0,"
                    " 'm', ?)", (c["conversation_id"], seq, MINIMISING))
        for mask in masks:
            seq += 1
            con.execute("INSERT INTO utterances (conversation_id, seq, speaker, neg, neu, pos,"
                        " compound, model_id, category_mask) VALUES (?, ?, 'agent', 0, 1, 0,"
                        " 0, 'm', ?)", (c["conversation_id"], seq, mask))
    con.commit()
    con.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    convs = generate()
    path = tmp_path_factory.mktemp("report") / "attune.db"
    build_db(path, convs)
    rows = []
    for c, masks in convs:
        r = dict(c)
        r["day"] = day_of(c["started_at"]) if c["started_at"] is not None else None
        r["dismissive_turns"] = sum(1 for m in masks if m & 0x3F00)
        rows.append(r)
    os.chmod(path, 0o444)   # a report never writes
    return path, rows


# ---- running the command ----------------------------------------------------------------------

def run(*args):
    return subprocess.run([str(ATTUNE), "report", *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def run_csv(*args):
    """CSV as written, CRLF line ends and all (text mode would translate them)."""
    p = subprocess.run([str(ATTUNE), "report", *map(str, args), "--format", "csv"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode()


def report(db, name, *args):
    p = run(name, "--db", db, "--format", "json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def in_range(c, since=None, until=None):
    if since is None and until is None:
        return True
    if c["started_at"] is None:
        return False
    return (since is None or c["started_at"] >= since) and \
        (until is None or c["started_at"] < until)


def close(got, want, tol=1e-9):
    if want is None:
        return got is None
    return got is not None and math.isclose(got, want, rel_tol=tol, abs_tol=tol)


def assert_close(got, want, what):
    assert close(got, want), "%s: got %r, want %r" % (what, got, want)


def group_order(keys):
    """Groups as the reports order them: by value, NULL last."""
    return sorted(keys, key=lambda k: (k is None, k or ""))


# ---- every report, every format ---------------------------------------------------------------

@pytest.mark.parametrize("name", REPORTS)
def test_formats_agree(data, name):
    db, _ = data
    rows = report(db, name)
    assert isinstance(rows, list) and rows
    keys = list(rows[0])
    assert all(list(r) == keys for r in rows)

    raw = run_csv(name, "--db", db)
    assert raw.endswith("\r\n") and raw.count("\n") == raw.count("\r\n")
    table = list(csv.reader(io.StringIO(raw, newline="")))
    assert table[0] == keys
    assert len(table) == len(rows) + 1
    for line, obj in zip(table[1:], rows):
        for cell, k in zip(line, keys):
            v = obj[k]
            if v is None:
                assert cell == ""
            elif isinstance(v, bool):
                assert cell == ("1" if v else "0")
            elif isinstance(v, (int, float)):
                assert close(float(cell), float(v)), (k, cell, v)
            else:
                assert cell == v

    p = run(name, "--db", db)   # table is the default
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n\n")[0].splitlines()
    header, rule, body = lines[0], lines[1], lines[2:]
    assert set(rule) <= {"-", " "}
    assert len(body) == len(rows)
    # Aligned: every report ends with a number column, right-aligned, so every line of the
    # table has the same length, and the columns start where the rule's dashes do.
    assert {len(l) for l in lines} == {len(rule)}, p.stdout
    starts = [i for i in range(len(rule)) if rule[i] == "-" and (i == 0 or rule[i - 1] == " ")]
    assert len(starts) == len(keys)
    for line in body:
        for s in starts[1:]:
            assert line[s - 2:s] == "  ", (line, s)
    # NULL is "-" in a table.
    nulls = [(i, k) for i, r in enumerate(rows) for k in keys if r[k] is None]
    if nulls:
        i, k = nulls[0]
        col = keys.index(k)
        end = starts[col + 1] - 2 if col + 1 < len(starts) else len(rule)
        assert body[i][starts[col]:end].strip() == "-"


def test_table_is_readable(data):
    db, _ = data
    out = run("resolution-time", "--db", db).stdout
    first = out.splitlines()[0].split()
    assert first == ["dimension", "group", "n", "mean", "median", "p90"]
    # Durations in a table read as durations; CSV and JSON carry milliseconds.
    assert any(u in out for u in ("h ", "m ")), out
    sat = run("satisfaction", "--db", db).stdout.splitlines()
    r_col = sat[0].split().index("r")
    value = sat[2].split()[r_col]
    assert len(value.split(".")[1]) == 3   # correlations to 3 decimals


# ---- the numbers ------------------------------------------------------------------------------

def expected_resolution(rows, by, since=None, until=None, min_n=1):
    sel = [r for r in rows if in_range(r, since, until) and r["resolution_ms"] is not None]
    out = []

    def entry(dim, key, xs):
        ok = len(xs) >= max(1, min_n)
        return {"dimension": dim, "group": key, "n": len(xs),
                "mean_ms": mean(xs) if ok else None,
                "median_ms": quantile7(xs, 0.5) if ok else None,
                "p90_ms": quantile7(xs, 0.9) if ok else None}

    col = DIMENSIONS[by]
    for key in group_order({r[col] for r in sel}):
        out.append(entry(by, key, [r["resolution_ms"] for r in sel if r[col] == key]))
    for t in ["low", "medium", "high", "no opportunity"]:
        out.append(entry("empathy_tier", t, [r["resolution_ms"] for r in sel
                                             if tier(r["empathy_response_rate"]) == t]))
    return out


def assert_rows(got, want):
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert list(g) == list(w), (g, w)
        for k in w:
            if isinstance(w[k], float) or isinstance(g[k], float):
                assert_close(g[k], w[k], "%s %s" % (k, w))
            else:
                assert g[k] == w[k], (k, g, w)


@pytest.mark.parametrize("by", list(DIMENSIONS))
def test_resolution_time(data, by):
    db, rows = data
    assert_rows(report(db, "resolution-time", "--by", by), expected_resolution(rows, by))


def test_resolution_time_default_is_by_agent_and_tiers_always_listed(data):
    db, rows = data
    got = report(db, "resolution-time")
    assert_rows(got, expected_resolution(rows, "agent"))
    assert [r["group"] for r in got if r["dimension"] == "empathy_tier"] == \
        ["low", "medium", "high", "no opportunity"]
    assert got[-5]["group"] is None      # conversations without an agent: NULL group, last


def test_min_n_gives_null_not_numbers(data):
    db, rows = data
    got = report(db, "resolution-time", "--by", "queue", "--min-n", "15")
    assert_rows(got, expected_resolution(rows, "queue", min_n=15))
    small = [r for r in got if r["n"] < 15]
    assert small and all(r["mean_ms"] is r["median_ms"] is r["p90_ms"] is None for r in small)
    assert any(r["mean_ms"] is not None for r in got)


def expected_satisfaction(rows, since=None, until=None, min_n=1):
    sel = [r for r in rows if in_range(r, since, until) and r["csat"] is not None]
    out = []
    for m in SAT_METRICS:
        pairs = [(r[m], r["csat"]) for r in sel if r[m] is not None]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        n = len(pairs)
        r = rho = lo = hi = None
        if n >= max(4, min_n):
            r, rho = pearson(xs, ys), spearman(xs, ys)
            lo, hi = fisher(r, n)
        out.append({"metric": m, "n": n, "pearson_r": r, "ci95_low": lo, "ci95_high": hi,
                    "spearman_rho": rho})
    out.sort(key=lambda e: (e["pearson_r"] is None, -abs(e["pearson_r"] or 0), e["metric"]))
    return out


def test_satisfaction(data):
    db, rows = data
    got = report(db, "satisfaction")
    want = expected_satisfaction(rows)
    assert [g["metric"] for g in got] == [w["metric"] for w in want]
    assert_rows(got, want)
    by_metric = {g["metric"]: g for g in got}
    # A constant metric and one never known have no correlation; strongest first, NULL last.
    assert by_metric["legal_threat"]["pearson_r"] is None and by_metric["legal_threat"]["n"] > 4
    assert by_metric["interruptions_agent"]["n"] == 0
    strengths = [abs(g["pearson_r"]) for g in got if g["pearson_r"] is not None]
    assert strengths == sorted(strengths, reverse=True)
    assert all(g["pearson_r"] is None for g in got[len(strengths):])
    for g in got:
        if g["pearson_r"] is not None:
            assert g["ci95_low"] <= g["pearson_r"] <= g["ci95_high"]


def test_satisfaction_needs_four_pairs(data):
    db, rows = data
    # One day holds few conversations with CSAT: some metrics fall under n = 4.
    since, until = "2024-05-05T08:00:00Z", "2024-05-05T10:30:00Z"
    s, u = iso_ms(since), iso_ms(until)
    got = report(db, "satisfaction", "--since", since, "--until", until)
    want = expected_satisfaction(rows, s, u)
    assert_rows(got, want)
    assert any(0 < g["n"] < 4 and g["pearson_r"] is None and g["spearman_rho"] is None
               for g in got), got
    got = report(db, "satisfaction", "--min-n", "1000")
    assert all(g["pearson_r"] is None and g["ci95_low"] is None for g in got)


def expected_escalations(rows, by, since=None, until=None, min_n=1):
    sel = [r for r in rows if in_range(r, since, until)]
    out = []

    def entry(dim, key, group):
        known = [r["escalated"] for r in group if r["escalated"] is not None]
        return {"dimension": dim, "group": key, "conversations": len(group), "n": len(known),
                "escalated": sum(known),
                "escalation_rate": mean(known) if len(known) >= min_n else None}

    col = DIMENSIONS[by]
    for key in group_order({r[col] for r in sel}):
        out.append(entry(by, key, [r for r in sel if r[col] == key]))
    for k in ["with", "without", "no opportunity"]:
        out.append(entry("empathy_response", k, [r for r in sel if empathy_response(r) == k]))
    return out


@pytest.mark.parametrize("by", list(DIMENSIONS))
def test_escalations(data, by):
    db, rows = data
    assert_rows(report(db, "escalations", "--by", by), expected_escalations(rows, by))


def expected_repeat(rows, by, days, since=None, until=None, min_n=1):
    known = [r for r in rows if r["customer_id"] is not None and r["started_at"] is not None]
    nxt = {}
    for r in known:
        later = [o for o in known if o["customer_id"] == r["customer_id"] and
                 (o["started_at"], o["conversation_id"]) > (r["started_at"],
                                                           r["conversation_id"])]
        nxt[r["conversation_id"]] = min((o["started_at"] for o in later), default=None)
    sel = [r for r in known if in_range(r, since, until)]

    def repeated(r):
        n = nxt[r["conversation_id"]]
        return n is not None and n - r["started_at"] <= days * DAY_MS

    def entry(dim, key, group):
        k = sum(repeated(r) for r in group)
        ok = len(group) >= min_n and group
        return {"dimension": dim, "group": key, "conversations": len(group), "repeated": k,
                "repeat_rate": k / len(group) if ok else None,
                "fcr_rate": 1 - k / len(group) if ok else None}

    out = [entry("all", "all", sel)]
    col = DIMENSIONS[by]
    for key in group_order({r[col] for r in sel}):
        out.append(entry(by, key, [r for r in sel if r[col] == key]))
    return out


@pytest.mark.parametrize("by,days", [("agent", None), ("queue", 1), ("day", 7),
                                     ("channel", 30)])
def test_repeat_contacts(data, by, days):
    db, rows = data
    args = ["--by", by] + (["--days", days] if days else [])
    got = report(db, "repeat-contacts", *args)
    assert_rows(got, expected_repeat(rows, by, days or 7))


def test_repeat_window_edges(data):
    """u-repeat's contacts follow each other after 1, 7 and 8 days: exactly N days after is
    within the window, a millisecond more is not."""
    db, rows = data
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    gaps = con.execute("SELECT conversation_id, gap_ms, repeated FROM report_next_contact"
                       " WHERE customer_id = 'u-repeat' ORDER BY started_at").fetchall()
    con.close()
    assert gaps == [("c000", DAY_MS, 1), ("c001", 7 * DAY_MS, 1), ("c002", 8 * DAY_MS, 0),
                    ("c003", None, 0)]
    for days in (1, 6, 7, 8):
        assert_rows(report(db, "repeat-contacts", "--days", days),
                    expected_repeat(rows, "agent", days))
    # The window looks past --until: c000 (day 1) is repeated by c001, which starts after it.
    got = report(db, "repeat-contacts", "--until", "2024-05-01", "--by", "day")
    assert_rows(got, expected_repeat(rows, "day", 7, until=BASE_MS + DAY_MS))


def expected_agents(rows, since=None, until=None, min_n=1):
    sel = [r for r in rows if in_range(r, since, until) and r["agent_id"] is not None]
    out = []
    for a in sorted({r["agent_id"] for r in sel}):
        g = [r for r in sel if r["agent_id"] == a]
        e = {"agent_id": a, "conversations": len(g)}
        disc = [r["dismissive_turns"] / r["agent_turns"] for r in g if r["agent_turns"]]
        for name, values in [
                ("empathy_score", [r["empathy_score"] for r in g]),
                ("response_rate", [r["empathy_response_rate"] for r in g]),
                ("dismissive_rate", disc),
                ("csat", [r["csat"] for r in g]),
                ("resolution_ms", [r["resolution_ms"] for r in g])]:
            values = [v for v in values if v is not None]
            e[name] = mean(values) if len(values) >= min_n and values else None
            e["n_" + name] = len(values)
        out.append(e)
    return out


def test_agents(data):
    db, rows = data
    got = report(db, "agents")
    assert_rows(got, expected_agents(rows))
    # Non-ASCII agent ids survive every format.
    assert "ä4" in [g["agent_id"] for g in got]
    assert "ä4" in run_csv("agents", "--db", db)


def expected_fatigue(rows, since=None, until=None, min_n=1):
    known = [r for r in rows if r["agent_id"] is not None and r["started_at"] is not None]
    out = []
    for a, d in sorted({(r["agent_id"], r["day"]) for r in known}):
        shift = sorted((r for r in known if r["agent_id"] == a and r["day"] == d),
                       key=lambda r: (r["started_at"], r["conversation_id"]))
        pos = [(i + 1, r) for i, r in enumerate(shift) if in_range(r, since, until)]
        if not pos:
            continue
        pts = [(i, r["empathy_response_rate"]) for i, r in pos
               if r["empathy_response_rate"] is not None]
        n = len(pts)
        s = slope([p[0] for p in pts], [p[1] for p in pts]) if n >= max(2, min_n) else None
        out.append({"agent_id": a, "day": d, "conversations": len(pos), "n": n,
                    "mean_rate": mean([p[1] for p in pts]) if n >= min_n and n else None,
                    "slope": s, "flagged": s is not None and s < 0 and n >= 5})
    return out


def test_fatigue(data):
    db, rows = data
    got = report(db, "fatigue")
    assert_rows(got, expected_fatigue(rows))
    a9 = [g for g in got if g["agent_id"] == "a9"]
    assert a9 == [g for g in got if g["agent_id"] == "a9" and g["day"] == "2024-05-03"]
    assert a9[0]["n"] == 6 and a9[0]["conversations"] == 7 and a9[0]["flagged"] is True
    a10 = [g for g in got if g["agent_id"] == "a10"][0]
    assert a10["slope"] < 0 and a10["n"] == 4 and a10["flagged"] is False
    # Positions count every conversation of the day, also those outside --since: a9's last
    # three keep positions 5..7.
    since = "2024-05-03T13:00:00Z"
    got = report(db, "fatigue", "--since", since)
    assert_rows(got, expected_fatigue(rows, since=iso_ms(since)))
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    assert con.execute("SELECT position FROM report_fatigue WHERE agent_id = 'a9'"
                       " AND started_at >= ? ORDER BY position", (iso_ms(since),)
                       ).fetchall() == [(5,), (6,), (7,)]
    # Same start time: ordered by conversation id.
    assert con.execute("SELECT conversation_id, position FROM report_fatigue"
                       " WHERE conversation_id IN ('c030', 'c031') ORDER BY position"
                       ).fetchall()[0][0] == "c030"
    con.close()


def expected_trend(rows, since=None, until=None, min_n=1):
    sel = [r for r in rows if in_range(r, since, until) and r["day"] is not None]
    out = []
    for d in sorted({r["day"] for r in sel}):
        g = [r for r in sel if r["day"] == d]
        e = {"day": d, "conversations": len(g)}
        for name, col in [("sentiment", "customer_sentiment_mean"),
                          ("frustration", "frustration_peak"), ("csat", "csat")]:
            values = [r[col] for r in g if r[col] is not None]
            e[name] = mean(values) if len(values) >= min_n and values else None
            e["n_" + name] = len(values)
        out.append(e)
    return out


def test_trend(data):
    db, rows = data
    assert_rows(report(db, "trend"), expected_trend(rows))
    assert_rows(report(db, "trend", "--min-n", "18"), expected_trend(rows, min_n=18))


# ---- ranges -----------------------------------------------------------------------------------

def iso_ms(s):
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.parametrize("since,until,s_ms,u_ms", [
    ("2024-05-02", None, BASE_MS + DAY_MS, None),
    (None, "2024-05-02", None, BASE_MS + 2 * DAY_MS),          # a bare day is included whole
    ("2024-05-02", "2024-05-03", BASE_MS + DAY_MS, BASE_MS + 3 * DAY_MS),
    ("2024-05-02T12:00:00+02:00", "2024-05-04T09:30:00.5Z",
     BASE_MS + DAY_MS + 10 * 3600000, BASE_MS + 3 * DAY_MS + 9 * 3600000 + 1800500),
    ("2024-05-01t23:00:00-01:00", None, BASE_MS + DAY_MS, None),
])
def test_since_until(data, since, until, s_ms, u_ms):
    db, rows = data
    args = (["--since", since] if since else []) + (["--until", until] if until else [])
    assert_rows(report(db, "resolution-time", "--by", "day", *args),
                expected_resolution(rows, "day", s_ms, u_ms))
    assert_rows(report(db, "escalations", "--by", "channel", *args),
                expected_escalations(rows, "channel", s_ms, u_ms))
    assert_rows(report(db, "satisfaction", *args), expected_satisfaction(rows, s_ms, u_ms))
    assert_rows(report(db, "repeat-contacts", "--by", "queue", *args),
                expected_repeat(rows, "queue", 7, s_ms, u_ms))
    assert_rows(report(db, "agents", *args), expected_agents(rows, s_ms, u_ms))
    assert_rows(report(db, "fatigue", *args), expected_fatigue(rows, s_ms, u_ms))
    assert_rows(report(db, "trend", *args), expected_trend(rows, s_ms, u_ms))


def test_empty_range(data):
    db, _ = data
    assert report(db, "agents", "--since", "2030-01-01") == []
    assert run_csv("trend", "--db", db, "--since", "2030-01-01") == "day,conversations,sentiment,n_sentiment,frustration,n_frustration," \
        "csat,n_csat\r\n"
    p = run("trend", "--db", db, "--since", "2030-01-01")
    assert "(no conversations)" in p.stdout
    # Empty tiers still show, with n = 0 and no numbers.
    got = report(db, "resolution-time", "--since", "2030-01-01")
    assert [(r["group"], r["n"], r["median_ms"]) for r in got] == \
        [("low", 0, None), ("medium", 0, None), ("high", 0, None), ("no opportunity", 0, None)]


# ---- the views agree with the command ---------------------------------------------------------

def view(db, sql):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql)]
    finally:
        con.close()


def test_views_match_reports(data):
    db, rows = data
    for by in DIMENSIONS:
        v = view(db, "SELECT * FROM report_resolution_time WHERE dimension = '%s'"
                 " ORDER BY grp IS NULL, grp" % by)
        want = [w for w in expected_resolution(rows, by) if w["dimension"] == by]
        assert [(x["grp"], x["n"]) for x in v] == [(w["group"], w["n"]) for w in want]
        for x, w in zip(v, want):
            assert_close(x["mean_ms"], w["mean_ms"], "view mean_ms")
        v = view(db, "SELECT * FROM report_escalations WHERE dimension = '%s'"
                 " ORDER BY grp IS NULL, grp" % by)
        want = [w for w in expected_escalations(rows, by) if w["dimension"] == by]
        assert [(x["grp"], x["conversations"], x["n"], x["escalated"]) for x in v] == \
            [(w["group"], w["conversations"], w["n"], w["escalated"]) for w in want]
        for x, w in zip(v, want):
            assert_close(x["escalation_rate"], w["escalation_rate"], "view escalation_rate")
        v = view(db, "SELECT * FROM report_repeat_contacts WHERE dimension = '%s'"
                 " ORDER BY grp IS NULL, grp" % by)
        want = expected_repeat(rows, by, 7)[1:]
        assert [(x["grp"], x["conversations"], x["repeated"]) for x in v] == \
            [(w["group"], w["conversations"], w["repeated"]) for w in want]
        for x, w in zip(v, want):
            assert_close(x["repeat_rate"], w["repeat_rate"], "view repeat_rate")
            assert_close(x["fcr_rate"], w["fcr_rate"], "view fcr_rate")
    tiers = view(db, "SELECT grp, n, mean_ms FROM report_resolution_time"
                 " WHERE dimension = 'empathy_tier'")
    want = {w["group"]: w for w in expected_resolution(rows, "agent")
            if w["dimension"] == "empathy_tier" and w["n"]}
    assert {t["grp"] for t in tiers} == set(want)
    for t in tiers:
        assert t["n"] == want[t["grp"]]["n"]
        assert_close(t["mean_ms"], want[t["grp"]]["mean_ms"], "tier mean")
    v = view(db, "SELECT * FROM report_escalations WHERE dimension = 'empathy_response'")
    want = {w["group"]: w for w in expected_escalations(rows, "agent")
            if w["dimension"] == "empathy_response"}
    for x in v:
        assert x["n"] == want[x["grp"]]["n"]
        assert_close(x["escalation_rate"], want[x["grp"]]["escalation_rate"], "with/without")
    assert view(db, "SELECT conversations, repeated FROM report_repeat_contacts"
                " WHERE dimension = 'all'") == \
        [{"conversations": expected_repeat(rows, "agent", 7)[0]["conversations"],
          "repeated": expected_repeat(rows, "agent", 7)[0]["repeated"]}]

    v = view(db, "SELECT * FROM report_agents ORDER BY agent_id")
    assert_rows(v, expected_agents(rows))

    v = view(db, "SELECT * FROM report_fatigue_slope ORDER BY agent_id, day")
    want = expected_fatigue(rows)
    assert [(x["agent_id"], x["day"], x["conversations"], x["n"]) for x in v] == \
        [(w["agent_id"], w["day"], w["conversations"], w["n"]) for w in want]
    for x, w in zip(v, want):
        assert_close(x["slope"], w["slope"], "view slope")
        assert x["flagged"] == int(w["flagged"])

    v = view(db, "SELECT * FROM report_trend ORDER BY day")
    assert_rows(v, expected_trend(rows))

    pairs = view(db, "SELECT metric, value, csat FROM report_satisfaction_pairs")
    assert {p["metric"] for p in pairs} == set(SAT_METRICS)
    with_csat = [r for r in rows if r["csat"] is not None]
    assert len(pairs) == len(SAT_METRICS) * len(with_csat)
    for m in ("empathy_score", "resolution_ms"):
        got = sorted((p["value"], p["csat"]) for p in pairs
                     if p["metric"] == m and p["value"] is not None)
        assert got == sorted((r[m], r["csat"]) for r in with_csat if r[m] is not None)


# ---- errors -----------------------------------------------------------------------------------

def test_usage_errors(data, tmp_path):
    db, _ = data
    p = run("nonsense", "--db", db)
    assert p.returncode == 2 and "unknown report" in p.stderr
    for name in REPORTS:
        assert name in p.stderr
    p = run()
    assert p.returncode == 2 and "resolution-time" in p.stderr
    for args, words in [
            (["agents", "--by", "queue"], "--by applies to"),
            (["trend", "--days", "3"], "--days applies to repeat-contacts"),
            (["agents", "--by", "team"], "--by must be"),
            (["agents", "--format", "xml"], "--format must be"),
            (["agents", "--min-n", "0"], "--min-n"),
            (["agents", "--min-n", "x"], "--min-n"),
            (["repeat-contacts", "--days", "-1"], "--days"),
            (["agents", "--since", "2024-13-01"], "not a date"),
            (["agents", "--since", "2024-02-30"], "not a date"),
            (["agents", "--since", "2023-02-29"], "not a date"),
            (["agents", "--since", "yesterday"], "not a date"),
            (["agents", "--until", "2024-05-01T10:00:00"], "not a date"),   # no offset
            (["agents", "--until", "2024-05-01T25:00:00Z"], "not a date"),
            (["agents", "--until", "2024-05-01T10:00:00+2:00"], "not a date"),
            (["agents", "--until", "2024-05-01T10:00:00."], "not a date"),
            (["agents", "--since", "2024-05-03", "--until", "2024-05-02"], "before --until"),
            (["agents", "surplus"], "unexpected argument"),
            (["agents", "--bogus"], "usage"),
    ]:
        p = run(*args, "--db", db)
        assert p.returncode == 2, (args, p.stderr)
        assert words in p.stderr, (args, p.stderr)
        assert p.stdout == ""
    p = run("--help")
    assert p.returncode == 0 and "repeat-contacts" in p.stdout
    assert subprocess.run([str(ATTUNE), "--help"], capture_output=True, text=True
                          ).stdout.count("report NAME") == 1
    assert run("agents", "--db", db, "--since", "2024-02-29").returncode == 0   # a leap day


def test_runtime_errors(tmp_path):
    p = run("agents", "--db", tmp_path / "missing.db")
    assert p.returncode == 1 and "no database at" in p.stderr and "missing.db" in p.stderr
    assert not (tmp_path / "missing.db").exists()     # read-only: never created

    junk = tmp_path / "junk.db"
    junk.write_text("this is not sqlite\n" * 100)
    p = run("agents", "--db", junk)
    assert p.returncode == 1 and "not a database" in p.stderr

    other = tmp_path / "other.db"
    sqlite3.connect(str(other)).execute("CREATE TABLE t (x)").connection.close()
    p = run("agents", "--db", other)
    assert p.returncode == 1 and "not an attune database" in p.stderr

    old = tmp_path / "old.db"
    con = sqlite3.connect(str(old))
    for n, name in enumerate(["0001_init.sql", "0002_metrics.sql"]):
        con.executescript((REPO / "schema" / name).read_text())
        con.execute("PRAGMA user_version = %d" % (n + 1))
    con.commit()
    con.close()
    p = run("agents", "--db", old)
    assert p.returncode == 1 and "schema version 2" in p.stderr and "attuned" in p.stderr

    p = run("agents", "--db", tmp_path)
    assert p.returncode == 1 and "directory" in p.stderr


def test_csv_quotes_fields(tmp_path):
    convs = generate()[:6]
    for k, (c, _) in enumerate(convs):
        c.update(queue='billing, "north"\nfloor 2' if k % 2 else "tech", resolved=1,
                 resolution_ms=60000 * (k + 1))
    db = tmp_path / "q.db"
    build_db(db, convs)
    raw = run_csv("resolution-time", "--db", db, "--by", "queue")
    assert '"billing, ""north""\nfloor 2"' in raw
    table = list(csv.reader(io.StringIO(raw, newline="")))
    assert [r[1] for r in table[1:3]] == ['billing, "north"\nfloor 2', "tech"]
    rows = report(db, "resolution-time", "--by", "queue")
    assert rows[0]["group"] == 'billing, "north"\nfloor 2'


# ---- with the daemon --------------------------------------------------------------------------

def test_report_on_a_database_attuned_holds(daemon):
    """attuned's migrations create the views; reports read its WAL database read-only while
    it runs."""
    c = daemon.connect()
    for i, (csat, text) in enumerate([(2, "That's our policy, calm down."),
                                      (5, "I'm so sorry, that must be frustrating."),
                                      (4, "I understand, let me fix that for you.")]):
        cid = "conv-%d" % i
        start = (BASE + timedelta(hours=9 + i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        end = (BASE + timedelta(hours=9 + i, minutes=10 * (i + 1))).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        c.send({"type": "conversation", "conversation_id": cid, "channel": "chat",
                "queue": "billing", "agent_id": "agent-7", "customer_id": "cust-1",
                "started_at": start,
                "turns": [{"speaker": "customer", "text": "This is ridiculous, I'm furious!"},
                          {"speaker": "agent", "text": text}],
                "outcome": {"resolved": True, "resolved_at": end, "csat": csat}})
    c.wait_ack()
    assert daemon.rows("PRAGMA user_version")[0][0] >= 3

    got = report(daemon.db, "agents")
    assert [(g["agent_id"], g["conversations"], g["n_csat"]) for g in got] == \
        [("agent-7", 3, 3)]
    assert_close(got[0]["csat"], 11 / 3, "csat")
    assert_close(got[0]["dismissive_rate"], 1 / 3, "dismissive_rate")   # conv-0's one turn
    got = report(daemon.db, "resolution-time")
    assert [(g["group"], g["n"]) for g in got if g["dimension"] == "agent"] == [("agent-7", 3)]
    assert_close(got[0]["median_ms"], 20 * 60000, "median")
    got = report(daemon.db, "repeat-contacts")
    assert (got[0]["conversations"], got[0]["repeated"]) == (3, 2)
    for name in REPORTS:
        assert run(name, "--db", daemon.db).returncode == 0

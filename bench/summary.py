#!/usr/bin/python3
"""summary.py: the scoring benchmark's summary table, from the JSON lines that bench_score
(--json) and peers.js wrote. bench/run.sh calls it and saves its output as
build/bench/score-summary.txt, from which the README's figures are updated.

usage: summary.py --score FILE [--memory-normal FILE] [--memory-10x FILE] [--peers FILE]
                  [--corpus-note TEXT]
"""

import argparse
import json
import os
import platform

TARGET_FULL_UTT_PER_S = 300000
TARGET_SENT_VS_SENTIMENT = 5.0
TARGET_10X_RATIO = 1.5


def read_jsonl(path):
    rows = []
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    return rows


def best_by(rows, bench, key):
    best = {}
    for r in rows:
        if r.get("bench") == bench:
            k = key(r)
            if k not in best or r["utt_per_s"] > best[k]["utt_per_s"]:
                best[k] = r
    return best


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fmt_int(x):
    return "{:,.0f}".format(x) if x is not None else "n/a"


def fmt_mb(kb):
    return "%.1f MB" % (kb / 1024.0) if kb is not None and kb >= 0 else "n/a"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--score", required=True)
    ap.add_argument("--memory-normal")
    ap.add_argument("--memory-10x")
    ap.add_argument("--peers")
    ap.add_argument("--corpus-note", default="")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    score = read_jsonl(args.score)
    # Several rounds: each scorer's best round (the rows of a round follow one another).
    res = best_by(score, "attune", lambda r: (r["mode"], r["model"]))
    models = {r["model"]: r for r in score if r.get("bench") == "attune-model"}
    mem = next((r for r in score if r.get("bench") == "attune-memory"), {})
    # The 10x / normal time ratio is measured within a round (interleaved): the median round's.
    ratios = sorted((r for r in score if r.get("bench") == "attune-ratio"),
                    key=lambda r: r["full_time_b_over_a"])
    ratio_row = ratios[len(ratios) // 2] if ratios else None
    peers = best_by(read_jsonl(args.peers), "peer", lambda r: r["name"])
    mem_normal = next((r for r in read_jsonl(args.memory_normal)
                       if r.get("bench") == "attune-memory"), None)
    mem_10x = next((r for r in read_jsonl(args.memory_10x)
                    if r.get("bench") == "attune-memory"), None)

    sent = res.get(("sentiment", "A"))
    full = res.get(("full", "A"))
    full10 = res.get(("full", "B"))
    vader = peers.get("vader-sentiment")
    afinn = peers.get("sentiment")

    out = []
    p = out.append
    p("attune scoring benchmark (bench/run.sh)")
    p("")
    cpu = mem.get("cpu", -1)
    p("machine: %s; one core (pinned to CPU %s); node %s" % (
        cpu_model(), cpu if cpu is not None and cpu >= 0 else "none",
        (vader or afinn or {}).get("node", "n/a")))
    if mem:
        p("corpus: %s utterances, %.1f MB, %.1f bytes per utterance, agent and customer mixed%s" % (
            fmt_int(mem["utterances"]), mem["bytes"] / 1e6,
            mem["bytes"] / float(max(1, mem["utterances"])),
            (" (" + args.corpus_note + ")") if args.corpus_note else ""))
    cpus = [r.get("cpu_seconds") for r in list(res.values()) + list(peers.values())]
    p("method: %d round(s), each a warm-up then one run of >= %.1f CPU seconds over the corpus "
      "of every attune mode and then of every peer; each scorer's best round; rates per second "
      "of CPU time on one core; MB = 10^6 bytes of UTF-8 text"
      % (args.rounds, min(c for c in cpus if c)) if any(cpus) else "method: n/a")
    p("")
    p("%-36s %13s %9s %9s %13s %6s" % ("scorer", "utterances/s", "MB/s", "us/utt",
                                        "wall utt/s", "cpu%"))
    p("-" * 91)

    def row(label, r):
        if not r:
            p("%-36s %13s %9s %9s %13s %6s" % (label, "n/a", "n/a", "n/a", "n/a", "n/a"))
            return
        share = 100.0 * r["cpu_seconds"] / r["seconds"] if r.get("seconds") else 0.0
        p("%-36s %13s %9.2f %9.3f %13s %6.0f" % (label, fmt_int(r["utt_per_s"]), r["mb_per_s"],
                                                1e6 / r["utt_per_s"],
                                                fmt_int(r.get("wall_utt_per_s")), share))

    row("attune sentiment-only", sent)
    row("attune full", full)
    row("attune full (10x patterns)", full10)
    row("vader-sentiment %s (VADER, JS)" % (vader or {}).get("version", ""), vader)
    row("sentiment %s (AFINN, JS)" % (afinn or {}).get("version", ""), afinn)
    p("(utterances/s, MB/s, us/utt: per second of CPU time of the best run; wall utt/s: the same "
      "run by wall time;")
    p(" cpu%: the share of the CPU the scorer got, below ~95 when other work shared the core)")
    p("")

    def verdict(ok):
        return "met" if ok else "NOT MET"

    p("%-52s %12s  %s" % ("target", "measured", "verdict"))
    p("-" * 73)
    if full:
        p("%-52s %12s  %s" % ("full scoring >= 300,000 utterances/s per core",
                              fmt_int(full["utt_per_s"]),
                              verdict(full["utt_per_s"] >= TARGET_FULL_UTT_PER_S)))
    if sent and afinn:
        r = sent["utt_per_s"] / afinn["utt_per_s"]
        p("%-52s %11.2fx  %s" % ("sentiment-only >= 5x `sentiment` (AFINN)", r,
                                 verdict(r >= TARGET_SENT_VS_SENTIMENT)))
    if full and afinn:
        r = full["utt_per_s"] / afinn["utt_per_s"]
        p("%-52s %11.2fx  %s" % ("full scoring faster than `sentiment` (AFINN)", r,
                                 verdict(r > 1.0)))
    if ratio_row:
        r = ratio_row["full_time_b_over_a"]
        p("%-52s %11.3fx  %s" % ("time per utterance, 10x patterns / normal, < 1.5x", r,
                                 verdict(r < TARGET_10X_RATIO)))
    p("")
    if vader and (sent or full):
        p("for reference: attune sentiment-only is %.1fx vader-sentiment (JS), full scoring "
          "%.1fx" % ((sent or full)["utt_per_s"] / vader["utt_per_s"],
                     (full or sent)["utt_per_s"] / vader["utt_per_s"]))
        p("")

    p("%-26s %9s %11s %10s %10s %12s %11s" % ("model", "patterns", "no literal", "build ms",
                                               "model RSS", "proc VmRSS", "proc VmHWM"))
    p("-" * 95)
    for key, label, m_mem in (("A", "normal (lexicons/)", mem_normal),
                              ("B", "10x patterns (synthetic)", mem_10x)):
        m = models.get(key)
        if not m:
            continue
        p("%-26s %9d %11d %10.1f %10s %12s %11s" % (
            label, m["n_patterns"], m["n_unfiltered"], m["build_ms"], fmt_mb(m["rss_delta_kb"]),
            fmt_mb(m_mem["vmrss_kb"]) if m_mem else "n/a",
            fmt_mb(m_mem["vmhwm_kb"]) if m_mem else "n/a"))
    if mem_normal:
        p("(proc = a process holding the corpus (%s of it), one model and one scratch, after "
          "scoring the corpus once)" % fmt_mb(mem_normal["corpus_kb"]))
    if "A" in models and "B" in models:
        a, b = models["A"], models["B"]
        same = a["pass_markers"] == b["pass_markers"]
        p("markers fired in one pass: normal %s, 10x %s%s" % (
            fmt_int(a["pass_markers"]), fmt_int(b["pass_markers"]),
            " (identical: the synthetic patterns never fire)" if same
            else " (DIFFERENT: some synthetic patterns fire)"))
        if a.get("pass_limit_hits") or b.get("pass_limit_hits"):
            p("PCRE2 limit hits in one pass: normal %d, 10x %d" % (a["pass_limit_hits"],
                                                                  b["pass_limit_hits"]))
    busy = [r for r in list(res.values()) + list(peers.values())
            if r.get("cpu_seconds") and r.get("seconds") and r["cpu_seconds"] < 0.9 * r["seconds"]]
    if busy:
        p("note: other work shared the CPU during some runs (cpu% < 90); the rates are per CPU "
          "second, but caches and clock were shared too, so rerun on an idle machine for "
          "figures to publish")
    print("\n".join(out))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""pattern_cost.py: what each marker pattern costs per utterance, to find the expensive ones.

For every pattern of the marker pattern files (id, kind, category, speakers, regex) builds a
lexicon copy in which that pattern is the only one (a pattern that reuses another's expression
with "@id" gets that one too), times full scoring with bench_score on the corpus, and subtracts
the time of a copy with a single pattern that never passes the prefilter (so the fixed cost of
running the marker stage at all is in the baseline, not in the first pattern measured). Prints the patterns by cost, most expensive first,
with the sum, and the baseline. Slow (one short measurement per pattern); use a corpus of some
tens of thousands of utterances.

usage: pattern_cost.py [--bench build/bench/bench_score] [--seconds 0.3] [--top 40]
                       [--lexicons lexicons] CORPUS.ndjson
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

KINDS = ("match", "fixed", "block")


def pattern_files(markers):
    out = {}
    for name in sorted(os.listdir(markers)):
        path = os.path.join(markers, name)
        if not os.path.isfile(path):
            continue
        comments, rows, ok = [], [], True
        with open(path, encoding="utf-8") as f:
            for raw in f:
                line = raw.rstrip("\r\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    comments.append(line)
                    continue
                fields = line.split("\t")
                if len(fields) != 5 or fields[1] not in KINDS:
                    ok = False
                    break
                rows.append(fields)
        if ok and rows:
            out[name] = (comments, rows)
    return out


def measure(bench, lexdir, corpus, seconds, cpu):
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as tf:
        cmd = [bench, "--modes", "full", "--seconds", str(seconds), "--repeats", "2",
               "--json", tf.name, "--lexicons", lexdir, corpus]
        if cpu is not None:
            cmd[1:1] = ["--cpu", str(cpu)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        for line in open(tf.name, encoding="utf-8"):
            row = json.loads(line)
            if row.get("bench") == "attune":
                return 1e6 / row["utt_per_s"]
    raise RuntimeError("bench_score printed no result")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default="build/bench/bench_score")
    ap.add_argument("--lexicons", default=os.environ.get("ATTUNE_LEXICONS", "lexicons"))
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("corpus")
    args = ap.parse_args()

    files = pattern_files(os.path.join(args.lexicons, "markers"))
    by_id = {f[0]: (name, f) for name, (_, rows) in files.items() for f in rows}
    tmp = tempfile.mkdtemp(prefix="attune-pattern-cost.")
    try:
        lex = os.path.join(tmp, "lex")
        shutil.copytree(args.lexicons, lex)

        # The baseline's one pattern: a category of the first file, a literal no text contains.
        first = next(iter(files.values()))[1][0]
        dummy_file = next(iter(files))
        dummy = ["bench-baseline", "match", first[2].split(",")[0], "*", r"\bqqzxjqvq\b"]

        def write(keep):
            for name, (comments, rows) in files.items():
                with open(os.path.join(lex, "markers", name), "w", encoding="utf-8") as f:
                    f.write("\n".join(comments) + "\n")
                    if name == dummy_file:
                        f.write("\t".join(dummy) + "\n")
                    for fields in rows:
                        if fields[0] in keep:
                            f.write("\t".join(fields) + "\n")

        write(set())
        base = measure(args.bench, lex, args.corpus, args.seconds, args.cpu)
        costs = []
        for pid, (name, fields) in by_id.items():
            if fields[4].startswith("@"):
                continue  # measured through the pattern it reuses
            keep = {pid}
            keep.update(q for q, (_, f) in by_id.items() if f[4] == "@" + pid)
            write(keep)
            us = measure(args.bench, lex, args.corpus, args.seconds, args.cpu)
            costs.append((us - base, pid, fields[1], fields[2]))
        write(set(by_id))
        everything = measure(args.bench, lex, args.corpus, args.seconds, args.cpu)
    finally:
        shutil.rmtree(tmp)

    costs.sort(reverse=True)
    total = sum(max(0.0, c[0]) for c in costs)
    print("baseline (one pattern that never runs): %.3f us per utterance, full scoring" % base)
    print("all patterns: %.3f us per utterance, %.3f above the baseline" % (everything,
                                                                             everything - base))
    print("sum of the per-pattern extra costs: %.3f us per utterance (%d patterns measured "
          "alone)" % (total, len(costs)))
    print("")
    print("%10s %7s  %-40s %-6s %s" % ("us/utt", "share", "pattern", "kind", "category"))
    for us, pid, kind, cat in costs[:args.top]:
        print("%10.3f %6.1f%%  %-40s %-6s %s" % (us, 100.0 * max(0.0, us) / total if total else 0,
                                                 pid, kind, cat))


if __name__ == "__main__":
    main()

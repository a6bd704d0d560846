#!/usr/bin/python3
"""scale_lexicon.py: copy a lexicon directory with every marker pattern file padded to FACTOR
times as many patterns, for the benchmark that checks that an utterance's cost does not grow with
patterns that cannot match it.

Every file is copied unchanged (recursively), except the marker pattern files: the files under
markers/ whose non-comment lines all have five TAB-separated fields
`id, kind (match|fixed|block), category, speakers, regex`. Each of those keeps its lines and gets
FACTOR-1 synthetic patterns per original one. A synthetic pattern is its original with every
literal word of three or more letters swapped for a rare or invented word, so it keeps the
original's shape (\\b, optional groups, alternations, classes, gaps, quantifiers), kind, category
and speakers, and reads like a real phrase pattern, but it cannot match ordinary conversation.
Short function words inside a phrase ("my", "the", "you") stay, as they would in real patterns.
Ids are `syn-<file>-NNNN`, unique across files.

With --avoid CORPUS (an NDJSON corpus of {"text"} lines) no replacement word is a word of that
corpus. Deterministic for a given --seed. Python 3 standard library only.

usage: scale_lexicon.py [--factor 10] [--seed 1] [--avoid CORPUS] SRC_DIR DEST_DIR
"""

import argparse
import json
import os
import random
import re
import shutil
import sys

KINDS = ("match", "fixed", "block")

# Real but rare English words: they look like vocabulary a lexicon might hold.
RARE_WORDS = """
abecedarian absquatulate acersecomic adumbrate agastopia algid amaranthine anfractuous
antediluvian apricity argle-bargle atrabilious bibliopole blatherskite bloviate borborygmus
brabble bumbershoot cacoethes callipygian cantankerous catawampus chiliad circumbendibus
clinomania collywobbles comminatory concinnity crapulence crepuscular cruciverbalist
defenestrate didicoy discombobulate dolorifuge eructation esurient farrago fartlek febrifuge
flibbertigibbet floccinaucinihilipilification frugivore fuliginous gallimaufry gardyloo
gobbledygook grandiloquent gubbins halcyon hebetude hobbledehoy hornswoggle ignotum impignorate
inveigle jentacular jumentous kakistocracy kerfuffle lackadaisical lalochezia latibule lollygag
lucubration lugubrious malversation mammothrept meldrop mumpsimus nudiustertian obambulate
obnubilate octothorpe oppugn orotund paccheri pandiculation panglossian perendinate petrichor
pettifogger philtrum pizzazz quagswagging quidnunc quincunx quisling quodlibet rambunctious
ratoon recumbentibus rigmarole rodomontade sardoodledom scaramouch schadenfreude scrivener
sesquipedalian shenanigans skedaddle snickersnee snollygoster sonder susurrus tatterdemalion
tittynope troglodyte ultracrepidarian umbriferous valetudinarian vellichor vomitory wabbit
wamblecropt widdershins xertz yarborough zarf zenzizenzizenzic
""".split()

ONSETS = ["b", "br", "bl", "d", "dr", "f", "fl", "fr", "g", "gl", "gr", "k", "kl", "m", "n",
          "p", "pl", "qu", "sk", "sl", "sn", "st", "t", "tr", "v", "w", "z", "th", "sh", "j"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "oo", "ou", "y"]
CODAS = ["", "", "", "b", "d", "g", "k", "l", "m", "n", "nd", "nk", "p", "r", "rn", "s", "st",
         "t", "x", "z", "mp"]
SUFFIXES = ["", "", "", "", "ish", "ery", "ling", "ous", "ive", "ate", "ify", "el", "ed", "s"]

# Words of a phrase that stay when they sit between spaces inside a literal run.
KEEP = {"the", "you", "your", "you're", "that", "this", "for", "and", "are", "was", "have", "has",
        "been", "with", "our", "not", "but", "can", "will", "just", "all", "any", "one", "from",
        "what", "about", "into", "they", "them", "their", "there", "here"}


class Words:
    def __init__(self, rng, avoid):
        self.rng = rng
        self.avoid = avoid
        self.used = set()

    def invent(self):
        rng = self.rng
        while True:
            if rng.random() < 0.3:
                w = rng.choice(RARE_WORDS).replace("-", "")
            else:
                w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                            for _ in range(rng.choice([2, 2, 2, 3])))
                w += rng.choice(SUFFIXES)
                if len(w) > 11:
                    continue
            if len(w) >= 5 and w not in self.avoid:
                return w


def mutate(regex, words):
    """Returns regex with its literal words (3+ letters) replaced by fresh rare words."""
    out = []
    i = 0
    n = len(regex)
    mapping = {}
    while i < n:
        c = regex[i]
        if c == "\\":
            # An escape: \b, \s, \w, \d, \., \p{..}, \x{..} and the like, copied as is.
            j = i + 2
            if j <= n and regex[i + 1:i + 2] in ("p", "P", "x", "o", "g", "k", "N") and \
                    j < n and regex[j] == "{":
                j = regex.index("}", j) + 1
            out.append(regex[i:j])
            i = j
        elif c == "[":
            # A character class, copied as is.
            j = i + 1
            if j < n and regex[j] == "^":
                j += 1
            if j < n and regex[j] == "]":
                j += 1
            while j < n and regex[j] != "]":
                j += 2 if regex[j] == "\\" else 1
            out.append(regex[i:j + 1])
            i = j + 1
        elif c == "(" and regex[i + 1:i + 2] == "?":
            # A group prefix: (?: (?= (?! (?<= (?<! (?<name> (?i) (?i: ..., copied as is.
            m = re.match(r"\(\?(?:<[=!]|<[A-Za-z_]\w*>|P<[A-Za-z_]\w*>|'[A-Za-z_]\w*'|[:=!>|]|"
                         r"[A-Za-z^-]*[:)])", regex[i:])
            j = i + (m.end() if m else 2)
            out.append(regex[i:j])
            i = j
        elif c == "{" and re.match(r"\{\d+(?:,\d*)?\}", regex[i:]):
            j = regex.index("}", i) + 1
            out.append(regex[i:j])
            i = j
        elif c.isalpha() and c.isascii():
            j = i
            while j < n and regex[j].isascii() and regex[j].isalpha():
                j += 1
            word = regex[i:j]
            between_spaces = i > 0 and regex[i - 1] == " " and j < n and regex[j] == " "
            # A three-letter run right after a group or quantifier is a suffix ("(?:l?ing)"),
            # not a word: it stays, like short words do.
            prev = "".join(out)[-2:]
            word_start = i == 0 or prev[-1:] in (" ", ":", "|", "(") or prev in ("\\b", "\\s", "s+", "s*")
            if len(word) < 3 or (len(word) == 3 and not word_start) or \
                    (word.lower() in KEEP and between_spaces):
                out.append(word)
            else:
                key = word.lower()
                if key not in mapping:
                    mapping[key] = words.invent()
                new = mapping[key]
                out.append(new.capitalize() if word[0].isupper() and len(word) > 1
                           and word[1:].islower() else new)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def pattern_lines(path):
    """Returns the parsed pattern lines of a marker pattern file, or None if it is not one."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 5 or fields[1] not in KINDS:
                return None
            rows.append(fields)
    return rows


def load_avoid(path):
    words = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            text = json.loads(line).get("text", "")
            words.update(re.findall(r"[a-z]+", text.lower()))
    return words


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--avoid", help="NDJSON corpus whose words must not be used")
    ap.add_argument("src")
    ap.add_argument("dest")
    args = ap.parse_args()
    if args.factor < 1:
        ap.error("--factor must be >= 1")
    if os.path.exists(args.dest):
        ap.error("%s exists" % args.dest)

    shutil.copytree(args.src, args.dest)
    rng = random.Random(args.seed)
    words = Words(rng, load_avoid(args.avoid) if args.avoid else set())
    markers = os.path.join(args.dest, "markers")
    total_orig = total_syn = 0
    for name in sorted(os.listdir(markers)) if os.path.isdir(markers) else []:
        path = os.path.join(markers, name)
        if not os.path.isfile(path):
            continue
        rows = pattern_lines(path)
        if not rows:
            continue
        stem = os.path.splitext(name)[0]
        syn = []
        k = 0
        for _ in range(args.factor - 1):
            for fields in rows:
                k += 1
                regex = mutate(fields[4], words)
                syn.append("\t".join(["syn-%s-%04d" % (stem, k), fields[1], fields[2], fields[3],
                                      regex]))
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n# Synthetic patterns (bench/scale_lexicon.py --factor %d --seed %d): the "
                    "originals' shapes with rare or invented words.\n" % (args.factor, args.seed))
            for line in syn:
                f.write(line + "\n")
        total_orig += len(rows)
        total_syn += len(syn)
        sys.stderr.write("scale_lexicon: %s: %d patterns + %d synthetic\n"
                         % (name, len(rows), len(syn)))
    if total_orig == 0:
        sys.stderr.write("scale_lexicon: warning: no marker pattern files under %s\n" % markers)
    sys.stderr.write("scale_lexicon: %d patterns -> %d in %s\n"
                     % (total_orig, total_orig + total_syn, args.dest))


if __name__ == "__main__":
    main()

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
Ids are `syn-<file>-NNNN`, unique across files. A pattern that reuses another's expression
(`@id`) gets, in its n-th copy, the n-th copy of that pattern.

Every synthetic pattern is checked to need one of its rare words in every match (a small reading
of the regex: sequences need one mandatory part that does, alternations need every branch to);
one that could match without (say, an alternation keeps a two-letter branch such as "bs") is
prefixed with a mandatory rare word, so the padding can never fire.

With --avoid CORPUS (an NDJSON corpus of {"text"} lines) no replacement word occurs anywhere
inside a word of that corpus. Deterministic for a given --seed. Python 3 standard library only.

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
        "what", "about", "into", "they", "them", "their", "there", "here", "to", "of", "in", "on",
        "at", "it", "is", "my", "me", "we", "be", "do", "so", "an", "or", "up", "as", "by", "if",
        "no"}


class Words:
    """Rare and invented words. avoid: the corpus's distinct letter runs joined by spaces; a
    word that occurs inside any of them is never used."""

    def __init__(self, rng, avoid):
        self.rng = rng
        self.avoid = avoid

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
    """Returns regex with its literal words replaced by rare or invented ones, and the set of
    words put in."""
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
            # A run of up to three letters right after a group, class or quantifier is a suffix
            # ("(?:l?ing)", "you['’]?re"), not a word: it stays, like single letters and the
            # function words inside a phrase do.
            prev = "".join(out)[-2:]
            word_start = i == 0 or prev[-1:] in (" ", ":", "|", "(") or \
                prev in ("\\b", "\\s", "s+", "s*", "W+", "W*")
            if len(word) < 2 or (len(word) <= 3 and not word_start) or \
                    (word.lower() in KEEP and between_spaces):
                out.append(word)
            else:
                # A quantifier after the run applies to its last letter ("appall?ing"): that
                # letter stays, so the invented word itself is never optional.
                tail = ""
                if j < n and regex[j] in "?*+{":
                    word, tail = word[:-1], word[-1]
                key = word.lower()
                if key not in mapping:
                    mapping[key] = words.invent()
                new = mapping[key]
                out.append((new.capitalize() if word[0].isupper() and len(word) > 1
                            and word[1:].islower() else new) + tail)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out), set(mapping.values())


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
    return " " + " ".join(sorted(words)) + " "


# ---- safety: does every match of a regex contain one of the rare words? --------------------
#
# A small recursive-descent reading of the PCRE2 subset the pattern files use, like the
# prefilter's in lib/markers.c: a literal run is safe when it contains a rare word; a sequence is
# safe when one of its mandatory elements is; an alternation when all its branches are; optional
# or unknown constructs are not. Conservative: "not safe" only costs a prefix.

class _Reader:
    def __init__(self, regex, rare):
        self.s = regex
        self.i = 0
        self.rare = rare
        self.failed = False

    def run_safe(self, run):
        low = run.lower()
        return any(w in low for w in self.rare)

    def alt(self):
        safe = self.seq()
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            safe = self.seq() and safe
        return safe

    def quant(self):
        """Skips a quantifier; returns (optional, repeats)."""
        s, i = self.s, self.i
        if i >= len(s):
            return False, False
        c = s[i]
        if c in "?*+":
            self.i += 1
            optional, repeats = c != "+", c != "?"
        elif c == "{":
            m = re.match(r"\{(\d*)(,?)(\d*)\}", s[i:])
            if not m or not (m.group(1) or m.group(3)):
                return False, False
            self.i += m.end()
            lo = int(m.group(1) or 0)
            optional, repeats = lo == 0, True
        else:
            return False, False
        if self.i < len(s) and s[self.i] in "?+":
            self.i += 1
        return optional, repeats

    def seq(self):
        s = self.s
        safe = False
        run = ""
        while self.i < len(s) and s[self.i] not in "|)":
            lit, atom_safe, zero_width = self.atom()
            if self.failed:
                return False
            optional, repeats = self.quant()
            if lit is not None and not optional and not repeats:
                run += lit
                continue
            if zero_width and not optional:
                continue  # consumes nothing: the run goes on in the text
            if lit is not None and not optional:
                run += lit
            if run and self.run_safe(run):
                safe = True
            run = ""
            if atom_safe and not optional:
                safe = True
        if run and self.run_safe(run):
            safe = True
        return safe

    def atom(self):
        """Returns (literal char or None, safe, zero_width)."""
        s = self.s
        c = s[self.i]
        self.i += 1
        if c == "(":
            zero = False
            if s.startswith("?", self.i):
                m = re.match(r"\?(?:<[=!]|[=!])", s[self.i:])
                if m:
                    zero = True
                    self.i += m.end()
                else:
                    m = re.match(r"\?(?:[:>|]|<[A-Za-z_]\w*>|P<[A-Za-z_]\w*>|'[A-Za-z_]\w*'|"
                                 r"[A-Za-z^-]*:)", s[self.i:])
                    if m:
                        self.i += m.end()
                    else:
                        m = re.match(r"\?[A-Za-z^-]*\)", s[self.i:])
                        if not m:
                            self.failed = True
                            return None, False, False
                        self.i += m.end()
                        return None, False, True  # (?i): an option setting
            inner = self.alt()
            if self.i < len(s) and s[self.i] == ")":
                self.i += 1
            else:
                self.failed = True
            return None, (inner and not zero), zero
        if c == "[":
            if s.startswith("^", self.i):
                self.i += 1
            if s.startswith("]", self.i):
                self.i += 1
            while self.i < len(s) and s[self.i] != "]":
                self.i += 2 if s[self.i] == "\\" else 1
            self.i += 1
            return None, False, False
        if c == "\\":
            if self.i >= len(s):
                self.failed = True
                return None, False, False
            e = s[self.i]
            self.i += 1
            if e in "bBAzZG":
                return None, False, True
            if e in "pPxogkN" and s.startswith("{", self.i):
                self.i = s.index("}", self.i) + 1
                return None, False, False
            if e in "pP":
                self.i += 1
                return None, False, False
            if not e.isalnum():
                return e, False, False
            return None, False, False
        if c in "^$":
            return None, False, True
        if c == ".":
            return None, False, False
        return c, False, False


def always_needs(regex, rare):
    r = _Reader(regex, rare)
    safe = r.alt()
    return safe and not r.failed and r.i == len(regex)


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
    words = Words(rng, load_avoid(args.avoid) if args.avoid else "")
    markers = os.path.join(args.dest, "markers")

    # Pass 1: the pattern files and the ids of every synthetic copy, so that "@id" references
    # can point at the copy of the same round.
    files = []
    for name in sorted(os.listdir(markers)) if os.path.isdir(markers) else []:
        path = os.path.join(markers, name)
        if os.path.isfile(path):
            rows = pattern_lines(path)
            if rows:
                files.append((name, path, rows))
    syn_id = {}
    for name, _path, rows in files:
        stem = os.path.splitext(name)[0]
        k = 0
        for copy in range(1, args.factor):
            for fields in rows:
                k += 1
                syn_id[(fields[0], copy)] = "syn-%s-%04d" % (stem, k)

    # Pass 2: write them.
    total_orig = total_syn = total_prefixed = 0
    for name, path, rows in files:
        syn = []
        prefixed = 0
        for copy in range(1, args.factor):
            for fields in rows:
                regex = fields[4]
                if regex.startswith("@"):
                    regex = "@" + syn_id.get((regex[1:], copy), regex[1:])
                else:
                    regex, rare = mutate(regex, words)
                    if not always_needs(regex, rare):
                        regex = "\\b%s (?:%s)" % (words.invent(), regex)
                        prefixed += 1
                syn.append("\t".join([syn_id[(fields[0], copy)], fields[1], fields[2], fields[3],
                                      regex]))
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n# Synthetic patterns (bench/scale_lexicon.py --factor %d --seed %d): the "
                    "originals' shapes with rare or invented words.\n" % (args.factor, args.seed))
            for line in syn:
                f.write(line + "\n")
        total_orig += len(rows)
        total_syn += len(syn)
        total_prefixed += prefixed
        sys.stderr.write("scale_lexicon: %s: %d patterns + %d synthetic (%d needed a rare-word "
                         "prefix)\n" % (name, len(rows), len(syn), prefixed))
    if total_orig == 0:
        sys.stderr.write("scale_lexicon: warning: no marker pattern files under %s\n" % markers)
    sys.stderr.write("scale_lexicon: %d patterns -> %d in %s\n"
                     % (total_orig, total_orig + total_syn, args.dest))


if __name__ == "__main__":
    main()

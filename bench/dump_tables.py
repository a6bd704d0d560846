#!/usr/bin/env python3
"""dump_tables.py DB: every table of an attuned database as text, for comparing what two builds
stored (bench/store_identity.sh). One header line per table (name and columns), then its rows in
primary-key order, one per line, each value as Python's repr (exact for reals). The wall-clock
columns (created_at, updated_at, deferred_at) are left out: they say when, not what."""
import sqlite3
import sys

WALL_CLOCK = {"created_at", "updated_at", "deferred_at"}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: dump_tables.py DB")
    db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name")]
    out = sys.stdout
    for t in tables:
        info = db.execute("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid",
                          (t,)).fetchall()
        cols = [name for name, _ in info if name not in WALL_CLOCK]
        keys = [name for name, pk in sorted(info, key=lambda c: c[1]) if pk > 0] or cols
        out.write("## %s (%s)\n" % (t, ", ".join(cols)))
        sql = "SELECT %s FROM \"%s\" ORDER BY %s" % (
            ", ".join('"%s"' % c for c in cols), t, ", ".join('"%s"' % k for k in keys))
        for row in db.execute(sql):
            out.write("|".join(repr(v) for v in row) + "\n")


if __name__ == "__main__":
    main()

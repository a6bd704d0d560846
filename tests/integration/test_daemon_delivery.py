"""attuned: acknowledgements come only after commit, are cumulative per connection, and
resending what was not (or was) acknowledged stores nothing twice."""
import socket
import sqlite3
import time

from conftest import db_connect, integrity_ok, utt

TEXTS = ["I'm so sorry about that, I understand how frustrating this is.",
         "This is ridiculous, I want to cancel my account!",
         "ok", "Thanks, that is great", "Please hold while I check."]


def test_ack_is_sent_only_after_the_commit(attuned):
    """A second connection holds the write lock: nothing is acknowledged until it lets go, and
    then the acknowledged rows are visible to any new reader at once."""
    d = attuned(batch_ms=5)
    c = d.connect()
    c.send(utt("c-warm", 0))
    c.wait_ack()
    lock = db_connect(d.db)
    lock.execute("BEGIN IMMEDIATE")
    try:
        n = c.send(*[utt("c-lock", i, text=TEXTS[i % 5]) for i in range(10)])
        assert c.quiet(1.5) == [], "acknowledged while the database was locked"
        assert d.rows("SELECT COUNT(*) FROM utterances WHERE conversation_id = 'c-lock'") == [
            (0,)]
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert c.wait_ack(n) == []
    assert d.rows("SELECT seq FROM utterances WHERE conversation_id = 'c-lock' "
                  "ORDER BY seq") == [(i,) for i in range(10)]
    # Exactly once: the 11 acknowledged lines and nothing else, and the file is sound.
    assert d.rows("SELECT conversation_id, COUNT(*), COUNT(DISTINCT seq) FROM utterances "
                  "GROUP BY 1 ORDER BY 1") == [("c-lock", 10, 10), ("c-warm", 1, 1)]
    integrity_ok(d.db)


def test_acked_lines_are_visible_to_a_new_reader(attuned):
    d = attuned(batch_ms=1)
    c = d.connect()
    for i in range(30):
        c.send(utt("c-vis", i), {"type": "outcome", "conversation_id": "c-vis", "nps": i % 11})
        c.wait_ack()
        con = sqlite3.connect(str(d.db), timeout=5)  # a fresh connection each time
        try:
            assert con.execute("SELECT COUNT(*), MAX(seq) FROM utterances").fetchone() == (
                i + 1, i)
            assert con.execute("SELECT nps FROM conversations").fetchone() == (i % 11,)
        finally:
            con.close()


def test_batch_ms_holds_the_ack_until_the_batch_commits(attuned):
    d = attuned(batch_ms=800, batch_rows=100000)
    c = d.connect()
    t0 = time.monotonic()
    c.send(utt("c-batch", 0), utt("c-batch", 1))
    assert c.quiet(0.3) == []
    assert d.rows("SELECT COUNT(*) FROM utterances") == [(0,)]
    c.wait_ack(2, timeout=5)
    assert time.monotonic() - t0 >= 0.7
    assert d.rows("SELECT COUNT(*) FROM utterances") == [(2,)]
    # batch_rows closes a batch before batch_ms.
    d2 = attuned(db=d.db.with_name("rows.db"), batch_ms=10000, batch_rows=5)
    c2 = d2.connect()
    t0 = time.monotonic()
    c2.send(*[utt("c-rows", i) for i in range(5)])
    c2.wait_ack(5, timeout=5)
    assert time.monotonic() - t0 < 5
    assert d2.rows("SELECT COUNT(*) FROM utterances") == [(5,)]


def test_1000_pipelined_lines_are_acked_cumulatively(attuned):
    """Every ack covers a prefix of the lines sent, and that prefix is stored when it
    arrives; the last ack is through 1000."""
    d = attuned(batch_rows=37, batch_ms=2)
    c = d.connect()
    lines = [utt("c-pipe", i, text=TEXTS[i % 5]) for i in range(1000)]
    n = c.send(*lines)
    assert n == 1000
    acks = []
    con = db_connect(d.db)
    while c.acked < n:
        m = c.recv(timeout=20)
        assert m["type"] == "ack", m
        acks.append(m["through"])
        # Lines 1..through are utterances seq 0..through-1: all of them must be stored now.
        (stored,) = con.execute("SELECT COUNT(*) FROM utterances WHERE seq < ?",
                                (m["through"],)).fetchone()
        assert stored == m["through"], "ack through %d but only %d stored" % (m["through"],
                                                                             stored)
    con.close()
    assert acks[-1] == 1000
    assert acks == sorted(set(acks)), "acks are strictly increasing"
    assert c.quiet(0.3) == []
    assert d.rows("SELECT COUNT(*), MIN(seq), MAX(seq) FROM utterances") == [(1000, 0, 999)]
    assert c.errors() == []


def test_1000_mixed_lines_over_many_conversations(daemon):
    c = daemon.connect()
    lines = []
    for k in range(100):
        cid = "c-mix-%d" % k
        lines.append({"type": "start", "conversation_id": cid, "channel": "chat",
                      "queue": "q%d" % (k % 3), "started_at": 1795644000000 + k})
        lines += [utt(cid, s, speaker="customer" if s % 2 else "agent", text=TEXTS[s % 5])
                  for s in range(8)]
        lines.append({"type": "end", "conversation_id": cid, "resolved": k % 2 == 0})
    assert len(lines) == 1000
    c.send(*lines)
    assert c.wait_ack(1000, timeout=30) == []
    assert daemon.rows("SELECT COUNT(*) FROM conversations") == [(100,)]
    assert daemon.rows("SELECT COUNT(*) FROM utterances") == [(800,)]
    assert daemon.rows("SELECT COUNT(*) FROM conversations WHERE resolved = (started_at % 2 = 0)"
                       " AND channel = 'chat'") == [(100,)]


def test_acks_are_per_connection(daemon):
    a, b = daemon.connect(), daemon.connect()
    a.send(*[utt("c-a", i) for i in range(50)])
    b.send({"type": "ping"}, utt("c-b", 0))
    b.wait_ack(2)
    a.wait_ack(50)
    assert b.acked == 2 and a.acked == 50


def test_same_seq_twice_is_stored_once(daemon):
    c = daemon.connect()
    first = "I'm so sorry, I understand how frustrating this is."
    c.send(utt("c-dup", 0, speaker="agent", text=first),
           utt("c-dup", 0, speaker="customer", text="something else entirely"))
    c.wait_ack()
    c.send(utt("c-dup", 0, speaker="agent", text=first))
    c.wait_ack()
    # The first stored version stays, with its markers, once.
    assert daemon.rows("SELECT seq, speaker, text FROM utterances") == [(0, "agent", first)]
    markers = daemon.rows("SELECT ordinal FROM markers")
    assert markers and markers == [(i,) for i in range(len(markers))]


def test_whole_conversation_resent_is_stored_once(daemon):
    conv = {"type": "conversation", "conversation_id": "c-again", "channel": "voice",
            "started_at": 1795644000000,
            "turns": [{"speaker": "customer" if i % 2 else "agent", "text": TEXTS[i % 5],
                       "start_ms": i * 1000, "end_ms": i * 1000 + 900} for i in range(12)],
            "outcome": {"csat": 2}}
    c = daemon.connect()
    c.send(conv)
    c.wait_ack()
    rows = daemon.rows("SELECT * FROM utterances ORDER BY seq")
    markers = daemon.rows("SELECT * FROM markers ORDER BY seq, ordinal")
    (conv_row,) = daemon.dicts("SELECT * FROM conversations")
    c.send(conv, conv)
    c.wait_ack()
    d2 = daemon.connect()
    d2.send(dict(conv, outcome={"csat": 4}))
    d2.wait_ack()
    assert daemon.rows("SELECT * FROM utterances ORDER BY seq") == rows
    assert daemon.rows("SELECT * FROM markers ORDER BY seq, ordinal") == markers
    assert len(rows) == 12 and markers
    (after,) = daemon.dicts("SELECT * FROM conversations")
    assert after["csat"] == 4.0 and after["created_at"] == conv_row["created_at"]
    assert after["channel"] == "voice"


def test_new_connection_resends_everything_without_duplicates(daemon):
    """A client that lost its connection resends every line it has not seen acknowledged (and,
    being careless, some that were)."""
    lines = []
    for k in range(5):
        cid = "c-re-%d" % k
        lines.append({"type": "start", "conversation_id": cid, "queue": "billing"})
        lines += [utt(cid, s, text=TEXTS[(s + k) % 5]) for s in range(40)]
        lines.append({"type": "outcome", "conversation_id": cid, "csat": 1 + k})
    first = daemon.connect()
    first.send(*lines[:150])
    first.wait_ack(100)
    first.close()   # gone, maybe with lines in flight
    second = daemon.connect()
    second.send(*lines[50:])
    second.wait_ack(len(lines) - 50)
    assert daemon.rows("SELECT COUNT(*) FROM utterances") == [(200,)]
    assert daemon.rows("SELECT COUNT(*) FROM conversations") == [(5,)]
    assert daemon.rows("SELECT conversation_id, csat, queue FROM conversations "
                       "ORDER BY conversation_id") == [("c-re-%d" % k, 1.0 + k, "billing")
                                                       for k in range(5)]
    n_markers = daemon.rows("SELECT COUNT(*) FROM markers")[0][0]
    third = daemon.connect()
    third.send(*lines)
    third.wait_ack()
    assert daemon.rows("SELECT COUNT(*) FROM utterances") == [(200,)]
    assert daemon.rows("SELECT COUNT(*) FROM markers") == [(n_markers,)]
    assert daemon.rows("SELECT COUNT(*) FROM (SELECT conversation_id, seq FROM markers "
                       "GROUP BY conversation_id, seq, ordinal HAVING COUNT(*) > 1)") == [(0,)]


def test_client_closing_with_lines_in_flight_loses_nothing_it_was_acked(attuned):
    d = attuned(batch_ms=200)
    c = d.connect()
    c.send(*[utt("c-gone", i) for i in range(100)])
    c.sock.shutdown(1)   # half-close: the server finishes, acks, then closes
    others = c.wait_ack(100)
    assert others == []
    assert c.expect_closed() == []
    assert d.rows("SELECT COUNT(*) FROM utterances") == [(100,)]
    # An abrupt close with lines in flight: they are still stored (nobody hears the ack).
    c2 = d.connect()
    c2.send(*[utt("c-gone2", i) for i in range(100)])
    c2.close()
    deadline = time.monotonic() + 5
    while d.rows("SELECT COUNT(*) FROM utterances WHERE conversation_id = 'c-gone2'")[0][0] \
            < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The server had read them all before the close: they are all stored.
    assert d.rows("SELECT COUNT(*) FROM utterances WHERE conversation_id = 'c-gone2'") == [
        (100,)]
    c3 = d.connect()
    c3.send({"type": "ping"})
    assert c3.recv() == {"type": "pong"}


def test_many_half_closed_connections_in_one_commit_are_all_acked_and_closed(attuned):
    """Clients that send their lines and half-close get their ack and then the close, also
    when one commit covers lines of more connections than the server handles in one pass."""
    d = attuned(batch_rows=1000, batch_ms=50)
    n = 300
    lock = db_connect(d.db)
    lock.execute("BEGIN IMMEDIATE")   # so that one batch, one commit covers all of them
    try:
        clients = [d.connect() for _ in range(n)]
        for i, c in enumerate(clients):
            c.send(utt("c-half-%d" % i, 0))
            c.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    deadline = time.monotonic() + 15
    not_closed = 0
    for c in clients:
        c.wait_ack(1, timeout=max(0.1, deadline - time.monotonic()))
        try:
            c.expect_closed(timeout=max(0.1, deadline - time.monotonic()))
        except AssertionError:
            not_closed += 1
        c.close()
    assert not_closed == 0, "%d of %d half-closed connections were never closed" % (
        not_closed, n)
    assert d.rows("SELECT COUNT(*) FROM utterances") == [(n,)]

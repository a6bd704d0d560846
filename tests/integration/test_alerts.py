"""Live alerts to subscribers (PROTOCOL.md `subscribe`, issue 4)."""
import socket
import time

from conftest import Client, refuse_seq


def utt(cid, seq, speaker, text, **kw):
    return dict(type="utterance", conversation_id=cid, seq=seq, speaker=speaker, text=text, **kw)


def alerts_of(client, n, timeout=10):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = client.recv(max(0.01, deadline - time.monotonic()))
        if m["type"] == "alert":
            got.append(m)
    return got


def test_subscriber_gets_each_kind_after_commit(attuned):
    d = attuned(consecutive_turns=2, compound_floor=-0.3)
    sub = d.connect()
    sub.send({"type": "subscribe", "events": ["alert"]})
    prod = d.connect()
    prod.send(
        {"type": "start", "conversation_id": "c1", "queue": "billing", "agent_id": "a1"},
        utt("c1", 0, "customer", "I want to cancel my account, this is terrible", ts=1000),
        utt("c1", 1, "agent", "Calm down, it's not a big deal."),
        utt("c1", 2, "customer", "This is awful and horrible."),
    )
    prod.wait_ack()
    got = alerts_of(sub, 3)
    kinds = {(a["kind"], a["seq"]) for a in got}
    assert ("churn_threat", 0) in kinds
    assert ("dismissive_agent", 1) in kinds
    assert ("frustration_spike", 2) in kinds  # two customer turns below -0.3 in a row
    for a in got:
        assert a["conversation_id"] == "c1" and a["detail"] and isinstance(a["ts"], int)
    churn = [a for a in got if a["kind"] == "churn_threat"][0]
    assert churn["ts"] == 1000  # the turn's own time
    # The alert names what fired, never the transcript text.
    assert "terrible" not in churn["detail"]
    # Alerts come only for committed data: the rows are there.
    assert d.rows("select count(*) from utterances where conversation_id='c1'") == [(3,)]


def test_filter_by_queue_and_agent(attuned):
    d = attuned()
    billing = d.connect()
    billing.send({"type": "subscribe", "events": ["alert"], "filter": {"queue": "billing"}})
    agent2 = d.connect()
    agent2.send({"type": "subscribe", "events": ["alert"], "filter": {"agent_id": "a2"}})
    prod = d.connect()
    prod.send(
        {"type": "start", "conversation_id": "b", "queue": "billing", "agent_id": "a1"},
        {"type": "start", "conversation_id": "t", "queue": "tech", "agent_id": "a2"},
    )
    prod.wait_ack()
    prod.send(utt("b", 0, "customer", "cancel my account now"),
              utt("t", 0, "customer", "cancel my account now"))
    prod.wait_ack()
    assert [a["conversation_id"] for a in alerts_of(billing, 1)] == ["b"]
    assert [a["conversation_id"] for a in alerts_of(agent2, 1)] == ["t"]
    assert billing.quiet(0.5) == [] and agent2.quiet(0.2) == []


def test_slow_subscriber_is_bounded_and_told(attuned):
    # Each line raises four alerts: 20,000 lines make ~13 MB of alert lines, far more than the
    # kernel buffers (tcp_wmem max 4 MiB) can hide from the daemon.
    n, per_line = 20000, 4
    d = attuned(subscriber_queue=5, batch_ms=5)
    slow = Client(d.port, rcvbuf=4096)
    slow.send({"type": "subscribe", "events": ["alert"]})
    time.sleep(0.2)
    prod = d.connect()
    text = ("I want to speak to your manager, I am cancelling my account and my lawyer will sue "
            "you, you idiot")
    lines = [utt("c%d" % i, 0, "customer", text) for i in range(n)]
    for i in range(0, n, 1000):
        prod.send(*lines[i:i + 1000])
    # Ingestion finishes although the subscriber reads nothing.
    prod.wait_ack(timeout=120)
    assert d.rows("select count(*) from utterances") == [(n,)]
    # Now the slow subscriber reads: it gets at most what fitted, then a notice of the drops.
    got = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            m = slow.recv(5)
        except TimeoutError:
            break
        got.append(m)
        if m["type"] == "error":
            break
    alerts = [m for m in got if m["type"] == "alert"]
    notices = [m for m in got if m["type"] == "error" and m["code"] == "overloaded"]
    assert len(alerts) < n * per_line
    assert notices and "dropped" in notices[0]["message"]
    assert notices[0]["line"] == 0


def test_a_line_that_could_not_be_stored_raises_no_alert(attuned):
    # Alerts speak only for committed data: a line answered `internal` (not stored) must not
    # reach subscribers, while the rest of its batch does.
    d = attuned(batch_ms=200)
    sub = d.connect()
    sub.send({"type": "subscribe", "events": ["alert"]})
    prod = d.connect()
    prod.send({"type": "ping"})
    prod.recv_type("pong")
    refuse_seq(d.db, 1)
    last = prod.send(
        utt("nz", 0, "customer", "I want to cancel my account, this is terrible"),
        utt("nz", 1, "customer", "I will take you to court, I'm calling my lawyer"),
        utt("nz", 2, "customer", "I'm going to switch to another provider and cancel"),
    )
    prod.wait_ack(last, timeout=30)
    assert [e["code"] for e in prod.errors()] == ["internal"]
    got = alerts_of(sub, 2)
    # Anything for seq 1 would have come with them (one commit); wait a little for a third.
    try:
        got += alerts_of(sub, 1, timeout=1)
    except TimeoutError:
        pass
    seqs = sorted({a["seq"] for a in got})
    assert 0 in seqs and 2 in seqs, got  # the stored lines still alert
    assert 1 not in seqs, got


def leave(client):
    """Half-closes the client and reads until the server has closed the connection: its
    close has then run on the loop thread before anything the test sends afterwards."""
    client.sock.shutdown(socket.SHUT_WR)
    client.expect_closed()
    client.close()


def test_alerts_follow_subscribers_that_come_and_go(attuned):
    # The server builds alert lines only while someone subscribes: however connections come
    # and go (subscribing twice, plain clients leaving, subscribers leaving), a subscriber that
    # remains gets every alert, and a new one after all had left gets them again.
    d = attuned()
    stays = d.connect()
    stays.send({"type": "subscribe", "events": ["alert"]}, {"type": "ping"})
    stays.recv_type("pong")
    twice = d.connect()
    twice.send({"type": "subscribe", "events": ["alert"]}, {"type": "subscribe",
                                                            "events": ["alert"]},
               {"type": "ping"})
    twice.recv_type("pong")
    plain = d.connect()
    plain.send({"type": "ping"})
    plain.recv_type("pong")
    leave(plain)
    leave(twice)
    prod = d.connect()
    prod.send(utt("g1", 0, "customer", "cancel my account now"))
    prod.wait_ack()
    assert [a["conversation_id"] for a in alerts_of(stays, 1)] == ["g1"]
    leave(stays)
    prod.send(utt("g2", 0, "customer", "cancel my account now"))
    prod.wait_ack()
    late = d.connect()
    late.send({"type": "subscribe", "events": ["alert"]}, {"type": "ping"})
    late.recv_type("pong")
    prod.send(utt("g3", 0, "customer", "cancel my account now"))
    prod.wait_ack()
    assert [a["conversation_id"] for a in alerts_of(late, 1)] == ["g3"]

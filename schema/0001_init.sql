-- 0001_init: conversations, their scored utterances and the markers that fired in them.
-- Applied by attuned inside one transaction that also sets PRAGMA user_version = 1.
-- Every table and column is described in schema/README.md.
-- Times are integer milliseconds since the Unix epoch (UTC); NULL means "not known".

CREATE TABLE conversations (
    conversation_id TEXT    NOT NULL PRIMARY KEY,
    channel         TEXT,
    queue           TEXT,
    agent_id        TEXT,
    customer_id     TEXT,
    started_at      INTEGER,
    ended_at        INTEGER,
    resolved        INTEGER CHECK (resolved IN (0, 1)),
    resolved_at     INTEGER,
    csat            REAL    CHECK (csat BETWEEN 1 AND 5),
    nps             INTEGER CHECK (nps BETWEEN 0 AND 10),
    escalated       INTEGER CHECK (escalated IN (0, 1)),
    transferred     INTEGER CHECK (transferred IN (0, 1)),
    created_at      INTEGER NOT NULL
                    DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)),
    updated_at      INTEGER NOT NULL
                    DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER))
) STRICT;

-- ANALYTICS.md section 3: every fleet report groups or filters conversations by one of these
-- and orders or buckets them by start time (day, shift position, repeat-contact window).
CREATE INDEX conversations_started_at ON conversations (started_at);
CREATE INDEX conversations_agent ON conversations (agent_id, started_at);
CREATE INDEX conversations_queue ON conversations (queue, started_at);
CREATE INDEX conversations_channel ON conversations (channel, started_at);
CREATE INDEX conversations_customer ON conversations (customer_id, started_at);

-- A rowid table rather than WITHOUT ROWID: rows carry the transcript text and can be large.
CREATE TABLE utterances (
    conversation_id   TEXT    NOT NULL
                      REFERENCES conversations (conversation_id) ON DELETE CASCADE,
    seq               INTEGER NOT NULL CHECK (seq >= 0),
    speaker           TEXT    NOT NULL,
    participant_id    TEXT,
    ts                INTEGER,
    start_ms          INTEGER,
    end_ms            INTEGER,
    text              TEXT,
    neg               REAL    NOT NULL,
    neu               REAL    NOT NULL,
    pos               REAL    NOT NULL,
    compound          REAL    NOT NULL,
    frustration_score REAL,
    model_id          TEXT    NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) STRICT;

CREATE TABLE markers (
    conversation_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    ordinal         INTEGER NOT NULL CHECK (ordinal >= 0),
    family          TEXT    NOT NULL,
    category        TEXT    NOT NULL,
    pattern         TEXT    NOT NULL,
    start_byte      INTEGER NOT NULL CHECK (start_byte >= 0),
    end_byte        INTEGER NOT NULL CHECK (end_byte >= start_byte),
    PRIMARY KEY (conversation_id, seq, ordinal),
    FOREIGN KEY (conversation_id, seq) REFERENCES utterances (conversation_id, seq)
        ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

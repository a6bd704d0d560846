-- 0005_pending_metrics: conversations whose metrics attuned has deferred (internal to attuned).
-- A conversation that only received utterances has its metrics recomputed at most once a
-- second (schema/README.md, "Metrics"). Until then it has a row here, written in the same
-- transaction as the utterances that made its metrics stale and deleted in the transaction
-- that recomputes them, so a crash (kill -9, power loss) cannot leave a conversation's metrics
-- stale for good: at start attuned recomputes every conversation listed here. Empty while
-- attuned is idle or stopped cleanly. Analysts have no use for it; nothing else writes it.
CREATE TABLE pending_metrics (
    conversation_id TEXT    NOT NULL PRIMARY KEY
                    REFERENCES conversations (conversation_id) ON DELETE CASCADE,
    -- when the recomputation was first deferred (daemon clock, ms since the epoch)
    deferred_at     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

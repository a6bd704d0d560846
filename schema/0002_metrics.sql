-- 0002_metrics: per-conversation metrics (ANALYTICS.md section 2) and what they are computed
-- from. attuned recomputes a conversation's metrics from its stored turns in the same
-- transaction that stores a turn, an end or an outcome for it, so the row is always consistent
-- with the utterances (streamed or sent whole, resent, or rescored). NULL means "not
-- applicable" (no opportunities, no voice timing, no outcome yet), never zero.

-- Bit (1 << n) per marker category n that fired in the turn, in the order of
-- schema/README.md (acknowledgement = bit 0 ... sarcasm = bit 22).
ALTER TABLE utterances ADD COLUMN category_mask INTEGER NOT NULL DEFAULT 0;
-- Agent turns: 1 when the turn offers a fix (an ownership marker) before any acknowledgement,
-- validation, apology, reassurance or perspective-taking marker; 0 when after one; NULL when the
-- turn offers no fix.
ALTER TABLE utterances ADD COLUMN solution_first INTEGER CHECK (solution_first IN (0, 1));

ALTER TABLE conversations ADD COLUMN turns INTEGER;
ALTER TABLE conversations ADD COLUMN agent_turns INTEGER;
ALTER TABLE conversations ADD COLUMN customer_turns INTEGER;
ALTER TABLE conversations ADD COLUMN duration_ms INTEGER;
ALTER TABLE conversations ADD COLUMN first_response_ms INTEGER;
ALTER TABLE conversations ADD COLUMN avg_response_ms REAL;
ALTER TABLE conversations ADD COLUMN max_response_ms INTEGER;
ALTER TABLE conversations ADD COLUMN customer_sentiment_q1 REAL;
ALTER TABLE conversations ADD COLUMN customer_sentiment_q2 REAL;
ALTER TABLE conversations ADD COLUMN customer_sentiment_q3 REAL;
ALTER TABLE conversations ADD COLUMN customer_sentiment_q4 REAL;
ALTER TABLE conversations ADD COLUMN customer_sentiment_start REAL;
ALTER TABLE conversations ADD COLUMN customer_sentiment_end REAL;
ALTER TABLE conversations ADD COLUMN customer_sentiment_min REAL;
ALTER TABLE conversations ADD COLUMN customer_sentiment_mean REAL;
ALTER TABLE conversations ADD COLUMN sentiment_trend REAL;
ALTER TABLE conversations ADD COLUMN empathy_opportunities INTEGER;
ALTER TABLE conversations ADD COLUMN empathy_responses INTEGER;
ALTER TABLE conversations ADD COLUMN empathy_response_rate REAL;
ALTER TABLE conversations ADD COLUMN solution_before_acknowledgement INTEGER;
ALTER TABLE conversations ADD COLUMN empathy_score REAL;
ALTER TABLE conversations ADD COLUMN frustration_peak REAL;
ALTER TABLE conversations ADD COLUMN frustration_end REAL;
ALTER TABLE conversations ADD COLUMN recovery REAL;
ALTER TABLE conversations ADD COLUMN escalation_requested INTEGER;
ALTER TABLE conversations ADD COLUMN churn_threat INTEGER;
ALTER TABLE conversations ADD COLUMN legal_threat INTEGER;
ALTER TABLE conversations ADD COLUMN abuse INTEGER;
ALTER TABLE conversations ADD COLUMN interruptions_agent INTEGER;
ALTER TABLE conversations ADD COLUMN interruptions_customer INTEGER;
ALTER TABLE conversations ADD COLUMN talk_ratio_agent REAL;
ALTER TABLE conversations ADD COLUMN silence_ms INTEGER;
ALTER TABLE conversations ADD COLUMN resolution_ms INTEGER;
-- resolved, csat, nps, escalated and transferred are the outcome columns of 0001; the metrics
-- recomputation also sets escalated to 1 when an escalation request was detected.
-- 1 once an `end` arrived: the metrics are final (a late outcome still updates them).
ALTER TABLE conversations ADD COLUMN ended INTEGER NOT NULL DEFAULT 0;

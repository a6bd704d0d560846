-- 0003_views: the fleet reports of ANALYTICS.md section 3 as views over conversations, for plain
-- sqlite3 and for `attune report`, which reads the per-conversation views and adds what SQL
-- lacks (medians, p90, correlations, slopes, date ranges, other repeat windows).
-- Every view is described in schema/README.md ("Report views").
--
-- Conventions of every view: a day is date(started_at / 1000, 'unixepoch'), in UTC. Aggregates
-- are over non-NULL values, with the count they are over beside them; a group with nothing to
-- average shows NULL. Grouped views are in long format: `dimension` names what `grp` holds
-- ('agent', 'queue', 'channel', 'day', ...), and grp is NULL for conversations without one.

-- One row per conversation: every column of conversations, and what the reports derive from
-- them. The tiers and the with/without split follow ANALYTICS.md "Precise rules".
CREATE VIEW report_conversations AS
SELECT c.*,
       date(c.started_at / 1000, 'unixepoch') AS day,
       CASE WHEN c.empathy_response_rate IS NULL THEN 'no opportunity'
            WHEN c.empathy_response_rate < 1.0 / 3 THEN 'low'
            WHEN c.empathy_response_rate < 2.0 / 3 THEN 'medium'
            ELSE 'high' END AS empathy_tier,
       CASE WHEN coalesce(c.empathy_opportunities, 0) = 0 THEN 'no opportunity'
            WHEN c.empathy_responses > 0 THEN 'with'
            ELSE 'without' END AS empathy_response,
       -- Agent turns with a dismissive marker: category_mask bits 8..13 (minimising ..
       -- but_negation, 0x3F00), in the category order of schema/README.md.
       (SELECT count(*) FROM utterances u
         WHERE u.conversation_id = c.conversation_id AND u.speaker = 'agent'
           AND (u.category_mask & 16128) <> 0) AS dismissive_turns
  FROM conversations c;

-- resolution-time: count and mean of resolution_ms (resolved conversations) by agent, queue,
-- channel, day and empathy tier. Median and p90 need the values: `attune report` reads them
-- from report_conversations.
CREATE VIEW report_resolution_time AS
SELECT 'agent' AS dimension, agent_id AS grp, count(*) AS n, avg(resolution_ms) AS mean_ms
  FROM report_conversations WHERE resolution_ms IS NOT NULL GROUP BY agent_id
UNION ALL
SELECT 'queue', queue, count(*), avg(resolution_ms)
  FROM report_conversations WHERE resolution_ms IS NOT NULL GROUP BY queue
UNION ALL
SELECT 'channel', channel, count(*), avg(resolution_ms)
  FROM report_conversations WHERE resolution_ms IS NOT NULL GROUP BY channel
UNION ALL
SELECT 'day', day, count(*), avg(resolution_ms)
  FROM report_conversations WHERE resolution_ms IS NOT NULL GROUP BY day
UNION ALL
SELECT 'empathy_tier', empathy_tier, count(*), avg(resolution_ms)
  FROM report_conversations WHERE resolution_ms IS NOT NULL GROUP BY empathy_tier;

-- escalations: the share of conversations escalated, over those whose `escalated` is known
-- (n), by agent, queue, channel, day, and with vs without an empathy response.
CREATE VIEW report_escalations AS
SELECT 'agent' AS dimension, agent_id AS grp, count(*) AS conversations, count(escalated) AS n,
       count(nullif(escalated, 0)) AS escalated, avg(escalated) AS escalation_rate
  FROM report_conversations GROUP BY agent_id
UNION ALL
SELECT 'queue', queue, count(*), count(escalated), count(nullif(escalated, 0)), avg(escalated)
  FROM report_conversations GROUP BY queue
UNION ALL
SELECT 'channel', channel, count(*), count(escalated), count(nullif(escalated, 0)), avg(escalated)
  FROM report_conversations GROUP BY channel
UNION ALL
SELECT 'day', day, count(*), count(escalated), count(nullif(escalated, 0)), avg(escalated)
  FROM report_conversations GROUP BY day
UNION ALL
SELECT 'empathy_response', empathy_response, count(*), count(escalated),
       count(nullif(escalated, 0)), avg(escalated)
  FROM report_conversations GROUP BY empathy_response;

-- One row per conversation with a customer and a start: when the same customer's next
-- conversation started (ties in started_at broken by conversation_id), and whether that was
-- within 7 days (604800000 ms) of this one's start. `attune report repeat-contacts --days N`
-- applies other windows to gap_ms.
CREATE VIEW report_next_contact AS
SELECT conversation_id, customer_id, agent_id, queue, channel, day, started_at,
       next_conversation_id, next_started_at, next_started_at - started_at AS gap_ms,
       CASE WHEN next_started_at - started_at <= 604800000 THEN 1 ELSE 0 END AS repeated
  FROM (SELECT conversation_id, customer_id, agent_id, queue, channel, day, started_at,
               lead(conversation_id) OVER w AS next_conversation_id,
               lead(started_at) OVER w AS next_started_at
          FROM report_conversations
         WHERE customer_id IS NOT NULL AND started_at IS NOT NULL
        WINDOW w AS (PARTITION BY customer_id ORDER BY started_at, conversation_id));

-- repeat-contacts: the share of conversations followed by another from the same customer
-- within 7 days, and first-contact resolution (1 minus that), over all conversations and by
-- agent, queue, channel and day (of the first conversation).
CREATE VIEW report_repeat_contacts AS
SELECT 'all' AS dimension, 'all' AS grp, count(*) AS conversations, sum(repeated) AS repeated,
       avg(repeated) AS repeat_rate, 1 - avg(repeated) AS fcr_rate
  FROM report_next_contact
UNION ALL
SELECT 'agent', agent_id, count(*), sum(repeated), avg(repeated), 1 - avg(repeated)
  FROM report_next_contact GROUP BY agent_id
UNION ALL
SELECT 'queue', queue, count(*), sum(repeated), avg(repeated), 1 - avg(repeated)
  FROM report_next_contact GROUP BY queue
UNION ALL
SELECT 'channel', channel, count(*), sum(repeated), avg(repeated), 1 - avg(repeated)
  FROM report_next_contact GROUP BY channel
UNION ALL
SELECT 'day', day, count(*), sum(repeated), avg(repeated), 1 - avg(repeated)
  FROM report_next_contact GROUP BY day;

-- agents: per agent, each metric is the mean over the agent's conversations where it is not
-- NULL, with that count. dismissive_rate of a conversation is its share of agent turns with a
-- dismissive marker.
CREATE VIEW report_agents AS
SELECT agent_id, count(*) AS conversations,
       avg(empathy_score) AS empathy_score, count(empathy_score) AS n_empathy_score,
       avg(empathy_response_rate) AS response_rate,
       count(empathy_response_rate) AS n_response_rate,
       avg(CAST(dismissive_turns AS REAL) / nullif(agent_turns, 0)) AS dismissive_rate,
       count(nullif(agent_turns, 0)) AS n_dismissive_rate,
       avg(csat) AS csat, count(csat) AS n_csat,
       avg(resolution_ms) AS resolution_ms, count(resolution_ms) AS n_resolution_ms
  FROM report_conversations
 WHERE agent_id IS NOT NULL
 GROUP BY agent_id;

-- fatigue, one row per conversation: its position in its agent's day (1, 2, ... by start
-- time; ties by conversation_id), counting every conversation of that day.
CREATE VIEW report_fatigue AS
SELECT agent_id, day,
       row_number() OVER (PARTITION BY agent_id, day ORDER BY started_at, conversation_id)
           AS position,
       conversation_id, started_at, empathy_response_rate
  FROM report_conversations
 WHERE agent_id IS NOT NULL AND started_at IS NOT NULL;

-- fatigue, per agent and day: the least-squares slope of empathy_response_rate against
-- position over the conversations with a rate (n), about two-pass means; flagged when the
-- slope is negative and n >= 5.
CREATE VIEW report_fatigue_slope AS
WITH f AS (SELECT * FROM report_fatigue),
     m AS (SELECT agent_id, day, count(*) AS conversations,
                  count(empathy_response_rate) AS n,
                  avg(CASE WHEN empathy_response_rate IS NOT NULL THEN position END) AS mean_x,
                  avg(empathy_response_rate) AS mean_y
             FROM f GROUP BY agent_id, day),
     s AS (SELECT m.agent_id, m.day, m.conversations, m.n,
                  sum((f.position - m.mean_x) * (f.empathy_response_rate - m.mean_y)) AS sxy,
                  sum(CASE WHEN f.empathy_response_rate IS NOT NULL
                           THEN (f.position - m.mean_x) * (f.position - m.mean_x) END) AS sxx
             FROM m JOIN f ON f.agent_id = m.agent_id AND f.day = m.day
            GROUP BY m.agent_id, m.day)
SELECT agent_id, day, conversations, n,
       CASE WHEN n >= 2 THEN sxy / sxx END AS slope,
       CASE WHEN n >= 5 AND sxy / sxx < 0 THEN 1 ELSE 0 END AS flagged
  FROM s;

-- trend: per day, the mean of each conversation's mean customer sentiment, of its peak
-- frustration and of CSAT, each with its count.
CREATE VIEW report_trend AS
SELECT day, count(*) AS conversations,
       avg(customer_sentiment_mean) AS sentiment, count(customer_sentiment_mean) AS n_sentiment,
       avg(frustration_peak) AS frustration, count(frustration_peak) AS n_frustration,
       avg(csat) AS csat, count(csat) AS n_csat
  FROM report_conversations
 WHERE day IS NOT NULL
 GROUP BY day;

-- satisfaction, long format: one row per conversation with a CSAT and per numeric metric of
-- ANALYTICS.md section 2 (value NULL when the metric is). With the attune_sqlite extension:
--   SELECT metric, corr(value, csat), spearman(value, csat) FROM report_satisfaction_pairs
--    GROUP BY metric;
CREATE VIEW report_satisfaction_pairs AS
WITH c AS (SELECT * FROM conversations WHERE csat IS NOT NULL)
SELECT conversation_id, started_at, 'turns' AS metric, turns AS value, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'agent_turns', agent_turns, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'customer_turns', customer_turns, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'duration_ms', duration_ms, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'first_response_ms', first_response_ms, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'avg_response_ms', avg_response_ms, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'max_response_ms', max_response_ms, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'customer_sentiment_q1', customer_sentiment_q1,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'customer_sentiment_q2', customer_sentiment_q2,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'customer_sentiment_q3', customer_sentiment_q3,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'customer_sentiment_q4', customer_sentiment_q4,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'customer_sentiment_start',
                 customer_sentiment_start, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'customer_sentiment_end', customer_sentiment_end,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'customer_sentiment_min', customer_sentiment_min,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'customer_sentiment_mean',
                 customer_sentiment_mean, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'sentiment_trend', sentiment_trend, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'empathy_opportunities', empathy_opportunities,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'empathy_responses', empathy_responses, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'empathy_response_rate', empathy_response_rate,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'solution_before_acknowledgement',
                 solution_before_acknowledgement, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'empathy_score', empathy_score, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'frustration_peak', frustration_peak, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'frustration_end', frustration_end, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'recovery', recovery, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'escalation_requested', escalation_requested,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'churn_threat', churn_threat, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'legal_threat', legal_threat, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'abuse', abuse, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'interruptions_agent', interruptions_agent,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'interruptions_customer', interruptions_customer,
                 csat FROM c
UNION ALL SELECT conversation_id, started_at, 'talk_ratio_agent', talk_ratio_agent, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'silence_ms', silence_ms, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'resolved', resolved, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'resolution_ms', resolution_ms, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'nps', nps, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'escalated', escalated, csat FROM c
UNION ALL SELECT conversation_id, started_at, 'transferred', transferred, csat FROM c;

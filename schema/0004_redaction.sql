-- 0004_redaction: whether the stored text differs from what was scored.
-- attuned scores the text as received and, with store_text = redacted, stores it with secrets
-- replaced by placeholders ("[CARD]", "[EMAIL]", ...). Such a text cannot be rescored (it would
-- score differently, and marker offsets refer to the original), so `attune rescore` passes
-- over rows with redacted = 1. Rows stored before this migration are judged by their text: a
-- bracketed upper-case placeholder marks them redacted.
ALTER TABLE utterances ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0 CHECK (redacted IN (0, 1));
UPDATE utterances SET redacted = 1
 WHERE text GLOB '*[[][A-Z]*[]]*'
   AND (text LIKE '%[CARD]%' OR text LIKE '%[EMAIL]%' OR text LIKE '%[PHONE]%'
        OR text LIKE '%[SSN]%' OR text LIKE '%[IBAN]%' OR text LIKE '%[CVV]%'
        OR text LIKE '%[EXPIRY]%');

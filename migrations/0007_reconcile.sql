-- +goose Up
-- 0007_reconcile: nothing stays unexplained. Reconciliation of replies whose
-- status callbacks were lost, Idempotency-Key records of the operator API,
-- the stuck-turn detector's progress, and an exact order for trace events.

-- accepted_at is when Twilio's SID was stored on an outbound message (Twilio
-- accepted it). It is set by the database in the statement that stores the
-- SID, whichever path stores it (the send's answer, a list look-up, a status
-- callback that came first), so no path can forget it.
ALTER TABLE messages ADD COLUMN accepted_at timestamptz;
-- +goose StatementBegin
CREATE FUNCTION conversa_set_accepted_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.accepted_at := clock_timestamp();
    RETURN NEW;
END $$;
-- +goose StatementEnd
CREATE TRIGGER messages_set_accepted_at BEFORE UPDATE OF twilio_sid ON messages
    FOR EACH ROW WHEN (OLD.twilio_sid IS NULL AND NEW.twilio_sid IS NOT NULL AND NEW.direction = 'outbound')
    EXECUTE FUNCTION conversa_set_accepted_at();
UPDATE messages SET accepted_at = COALESCE(send_started_at, updated_at)
WHERE direction = 'outbound' AND twilio_sid IS NOT NULL
  AND status NOT IN ('delivered', 'read', 'failed', 'undelivered');

-- The replies the reconciler looks at: accepted, no final status yet, not
-- given up. The predicate is store.unfinishedSQL's, word for word, so the
-- planner uses this small index (it holds only messages in flight); a test
-- walks every status through both.
CREATE INDEX messages_unfinished_idx ON messages (accepted_at)
    WHERE accepted_at IS NOT NULL AND status NOT IN ('delivered', 'read', 'failed', 'undelivered')
      AND error_reason IS NULL;

-- reconcile_checks is each reconciled message's schedule: how often it was
-- looked up at Twilio, what the last look-up found, and when the next is due.
CREATE TABLE reconcile_checks (
    message_id     bigint PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    checks         integer NOT NULL,
    last_class     text NOT NULL,
    last_status    text,
    checked_at     timestamptz NOT NULL,
    next_check_at  timestamptz NOT NULL
);

-- Idempotency-Key records of the operator API's creating POSTs, for 24 h.
-- key_hash is SHA-256 of who asked and the key; request_hash of the method,
-- path and body; the answer is sealed with SECRET_KEY (it may hold an API
-- key shown once, or a message body).
CREATE TABLE idempotency_keys (
    key_hash         bytea PRIMARY KEY,
    request_hash     bytea NOT NULL,
    status           integer NOT NULL,
    response_sealed  bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- maintenance_marks remembers how far a periodic scan got (the stuck-turn
-- detector checks each inbound message once, five minutes after it came).
-- Messages from before this migration are not scanned.
CREATE TABLE maintenance_marks (
    name     text PRIMARY KEY,
    last_id  bigint NOT NULL
);
INSERT INTO maintenance_marks (name, last_id) SELECT 'stuck_turns', COALESCE(max(id), 0) FROM messages;

-- Trace order. An inbound message and its reply tell one story, and each
-- event gets the next number of that story (seq) in the transaction that
-- writes it, under the story's counter row lock: the trace sorts by it, not
-- by the clock. Events written before this migration have no seq and sort
-- first, by time.
ALTER TABLE message_events ADD COLUMN seq bigint;
CREATE TABLE message_event_seqs (
    root_id   bigint PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    last_seq  bigint NOT NULL
);
-- +goose StatementBegin
CREATE FUNCTION conversa_event_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    root bigint;
BEGIN
    SELECT COALESCE(reply_to_id, id) INTO root FROM messages WHERE id = NEW.message_id;
    INSERT INTO message_event_seqs AS s (root_id, last_seq) VALUES (COALESCE(root, NEW.message_id), 1)
    ON CONFLICT (root_id) DO UPDATE SET last_seq = s.last_seq + 1
    RETURNING last_seq INTO NEW.seq;
    RETURN NEW;
END $$;
-- +goose StatementEnd
CREATE TRIGGER message_events_seq BEFORE INSERT ON message_events
    FOR EACH ROW EXECUTE FUNCTION conversa_event_seq();
DROP INDEX message_events_message_idx;
CREATE INDEX message_events_message_idx ON message_events (message_id, seq, id);

-- +goose Down
DROP INDEX message_events_message_idx;
CREATE INDEX message_events_message_idx ON message_events (message_id, id);
DROP TRIGGER message_events_seq ON message_events;
DROP FUNCTION conversa_event_seq();
DROP TABLE message_event_seqs;
ALTER TABLE message_events DROP COLUMN seq;
DROP TABLE maintenance_marks;
DROP TABLE idempotency_keys;
DROP TABLE reconcile_checks;
DROP INDEX messages_unfinished_idx;
DROP TRIGGER messages_set_accepted_at ON messages;
DROP FUNCTION conversa_set_accepted_at();
ALTER TABLE messages DROP COLUMN accepted_at;

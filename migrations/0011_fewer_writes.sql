-- +goose Up
-- 0011_fewer_writes: a trace event's order costs no extra row lock or write,
-- events skip a redundant check of the tenants row, and a reply's status
-- updates can be HOT.
--
-- Migration 0007 numbered each story's events (an inbound message and its
-- reply) with a counter row per story, upserted by a trigger for every event:
-- about eleven upserts and as many row locks per replied message, 5-8 % of
-- the sustained pipeline's throughput (docs/operations.md, "Performance").
-- The order the trace needs is the order in which events were written, and a
-- sequence gives it: an event written after another event has committed (the
-- turn after the ingest that queued it, the send after the turn, a status
-- callback after the SID was stored, each under the message's row lock)
-- always draws a higher number. The trace API numbers a story's events
-- 1, 2, 3, ... from that order when it reads them (store.MessageEvents).
-- Numbers already given stay; new ones start above every one of them, so an
-- old story's later events still come after its earlier ones.
CREATE SEQUENCE message_event_order AS bigint;
SELECT setval('message_event_order', COALESCE((SELECT max(seq) FROM message_events), 0) + 1, false);
ALTER TABLE message_events ALTER COLUMN seq SET DEFAULT nextval('message_event_order');
ALTER SEQUENCE message_event_order OWNED BY message_events.seq;
DROP TRIGGER message_events_seq ON message_events;
DROP FUNCTION conversa_event_seq();
DROP TABLE message_event_seqs;

-- An event's tenant needs no foreign key of its own: its message's does the
-- work (deleting a tenant deletes its messages, and they their events), and
-- the key's check locked the tenants row (FOR KEY SHARE) once per event, the
-- same row for every concurrent transaction of a tenant.
ALTER TABLE message_events DROP CONSTRAINT message_events_tenant_id_fkey;

-- A reply's row is updated four times (claim, Twilio's answer, sent,
-- delivered), and none of those updates was HOT: the reply's status was in
-- the predicate of the reconciler's partial index, so every status change
-- wrote a new entry into each of the table's six indexes. in_flight is that
-- predicate, computed by the database: a change of status that keeps a
-- message in flight (queued -> sent, pending -> claimed) leaves every indexed
-- value as it was, and with room on the page (fillfactor) the update is HOT.
-- store.unfinishedSQL reads it; TestUnfinishedMatchesFinal walks every
-- status through it. (Adding the column rewrites the table once.)
ALTER TABLE messages ADD COLUMN in_flight boolean GENERATED ALWAYS AS (
    accepted_at IS NOT NULL AND status NOT IN ('delivered', 'read', 'failed', 'undelivered')
    AND error_reason IS NULL) STORED;
DROP INDEX messages_unfinished_idx;
CREATE INDEX messages_unfinished_idx ON messages (accepted_at) WHERE in_flight;
ALTER TABLE messages SET (fillfactor = 80);

-- +goose Down
ALTER TABLE messages RESET (fillfactor);
DROP INDEX messages_unfinished_idx;
ALTER TABLE messages DROP COLUMN in_flight;
CREATE INDEX messages_unfinished_idx ON messages (accepted_at)
    WHERE accepted_at IS NOT NULL AND status NOT IN ('delivered', 'read', 'failed', 'undelivered')
      AND error_reason IS NULL;
ALTER TABLE message_events ADD CONSTRAINT message_events_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE;
CREATE TABLE message_event_seqs (
    root_id   bigint PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    last_seq  bigint NOT NULL
);
INSERT INTO message_event_seqs (root_id, last_seq)
SELECT COALESCE(m.reply_to_id, m.id), max(e.seq) FROM message_events e JOIN messages m ON m.id = e.message_id
WHERE e.seq IS NOT NULL GROUP BY 1
ON CONFLICT (root_id) DO UPDATE SET last_seq = GREATEST(message_event_seqs.last_seq, EXCLUDED.last_seq);
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
ALTER TABLE message_events ALTER COLUMN seq DROP DEFAULT;
DROP SEQUENCE message_event_order;

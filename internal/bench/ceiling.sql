-- The one-commit ceiling: the same work as one ingest, as raw SQL.
-- Upsert a conversation, insert a message, insert a unique River job, notify.
\set conv random(1, 5000)
\set r random(1, 2000000000)
BEGIN;
INSERT INTO ceiling_conversations (id, last_inbound_at) VALUES (:conv::bigint, now())
  ON CONFLICT (id) DO UPDATE SET last_inbound_at = now(), version = ceiling_conversations.version + 1;
INSERT INTO ceiling_messages (conversation_id, body, twilio_sid) VALUES (:conv::bigint, 'hello there', 'SM' || :client_id::text || '-' || :r::text || '-' || clock_timestamp()::text);
INSERT INTO river_job (args, kind, max_attempts, queue, state, unique_key, unique_states)
  VALUES (jsonb_build_object('conversation_id', :conv::bigint, 'r', :r::bigint, 'c', :client_id::int), 'ceiling.reply', 10, 'ceiling', 'available',
          sha256(convert_to(:conv::text || '-' || :r::text || '-' || :client_id::text || '-' || clock_timestamp()::text, 'UTF8')), B'11110101');
SELECT pg_notify('river_insert', '{"queue":"ceiling"}');
COMMIT;

-- +goose Up
-- 0015_broadcasts: proactive messages to many contacts from one sender
-- (README, "Broadcasts"; the statements are store/broadcast.go's).

-- A broadcast is one message (a WhatsApp template, content_sid and its
-- variables, or an SMS body) from one of the tenant's numbers to many
-- contacts. Its recipients' messages are written in batches, each batch its
-- own transaction; queued_at says when the last one committed (the POST's
-- answer), finished_at when every message had a final status (the
-- conversa.broadcast job). content_variables are the broadcast's, the same
-- for every recipient: the business's words, not a customer's.
--
-- idempotency_key_hash is the Idempotency-Key the POST came with (hashed
-- with who asked, as idempotency_keys.key_hash), request_hash its method,
-- path and body: a repeat with the key resumes or answers this broadcast.
-- A key is live for 24 h; an older one is released (set NULL) when reused.
CREATE TABLE broadcasts (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel_id            bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    name                  text NOT NULL DEFAULT '',
    body                  text NOT NULL DEFAULT '',
    content_sid           text CHECK (content_sid <> ''),
    content_variables     jsonb,
    -- Exactly one of a body and a template.
    CONSTRAINT broadcasts_body_or_template_check CHECK ((content_sid IS NULL) <> (body = '')),
    -- Distinct addresses given (invalid ones included), and how many were invalid.
    recipients            integer NOT NULL DEFAULT 0 CHECK (recipients >= 0),
    invalid               integer NOT NULL DEFAULT 0 CHECK (invalid >= 0),
    idempotency_key_hash  bytea UNIQUE,
    request_hash          bytea,
    created_at            timestamptz NOT NULL DEFAULT now(),
    queued_at             timestamptz,
    finished_at           timestamptz
);
CREATE INDEX broadcasts_tenant_idx ON broadcasts (tenant_id, id DESC);

-- One row per (broadcast, contact): the unique key that makes a resumed or
-- repeated creation write no second message to anyone. It holds the
-- contact's id, not its address, so an erasure (which anonymises the
-- contact row) leaves nothing here to erase. opted_out: the contact had
-- opted out when the row was written, and gets no message.
CREATE TABLE broadcast_recipients (
    broadcast_id  bigint NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
    contact_id    bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    opted_out     boolean NOT NULL,
    PRIMARY KEY (broadcast_id, contact_id)
);
CREATE INDEX broadcast_recipients_contact_idx ON broadcast_recipients (contact_id);

-- A broadcast's messages point at it: the send path reads its template
-- through this (store.deliverySelect), the counts group by it. The column
-- never changes, so status updates stay HOT (migration 0011).
ALTER TABLE messages ADD COLUMN broadcast_id bigint REFERENCES broadcasts (id) ON DELETE CASCADE;
CREATE INDEX messages_broadcast_idx ON messages (broadcast_id) WHERE broadcast_id IS NOT NULL;

-- +goose Down
DROP INDEX messages_broadcast_idx;
ALTER TABLE messages DROP COLUMN broadcast_id;
DROP TABLE broadcast_recipients;
DROP TABLE broadcasts;

-- +goose Up
-- 0001_core: tenants, Twilio accounts, channels, contacts, conversations,
-- messages, their events, and the credit ledger.

CREATE TABLE tenants (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (name <> ''),
    -- SHA-256 of the tenant API key: the key itself is shown once, never stored.
    api_key_hash  bytea NOT NULL UNIQUE,
    -- credits is the balance; credit_ledger holds every movement that made it.
    credits       bigint NOT NULL DEFAULT 0,
    reply_price   integer NOT NULL DEFAULT 1 CHECK (reply_price >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- One Twilio account may serve several tenants (an agency's clients), so the
-- SID is unique per tenant only.
CREATE TABLE twilio_accounts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    account_sid     text NOT NULL CHECK (account_sid <> ''),
    -- AES-GCM(nonce || ciphertext) of the auth token under SECRET_KEY.
    auth_token_enc  bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, account_sid)
);

-- A channel is one of the tenant's numbers; each number belongs to one tenant.
CREATE TABLE channels (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id              uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    account_id             bigint NOT NULL REFERENCES twilio_accounts (id) ON DELETE CASCADE,
    -- address is Twilio's form: "+15005550006" or "whatsapp:+14155238886".
    address                text NOT NULL UNIQUE CHECK (address <> ''),
    kind                   text NOT NULL CHECK (kind IN ('sms', 'whatsapp')),
    -- sends per second from this number; NULL = the kind's default.
    rate_per_second        double precision CHECK (rate_per_second > 0),
    -- WhatsApp template used outside the 24-hour window.
    template_content_sid   text,
    template_variables     jsonb,
    created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channels_tenant_idx ON channels (tenant_id);
CREATE INDEX channels_account_idx ON channels (account_id);

CREATE TABLE contacts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address       text NOT NULL,
    wa_id         text,
    profile_name  text,
    opted_out     boolean NOT NULL DEFAULT false,
    opted_out_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, address)
);

CREATE TABLE conversations (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id                 uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel_id                bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    contact_id                bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status                    text NOT NULL DEFAULT 'bot' CHECK (status IN ('bot', 'human', 'closed')),
    -- version is bumped on every change, for optimistic locking.
    version                   bigint NOT NULL DEFAULT 1,
    last_inbound_at           timestamptz,
    -- The newest inbound message: a turn job for an older one is superseded.
    last_inbound_message_id   bigint,
    summary                   text NOT NULL DEFAULT '',
    summary_through_id        bigint NOT NULL DEFAULT 0,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
-- At most one open conversation per (number, contact).
CREATE UNIQUE INDEX conversations_open_uq ON conversations (channel_id, contact_id) WHERE status <> 'closed';
CREATE INDEX conversations_tenant_idx ON conversations (tenant_id, id DESC);

CREATE TABLE messages (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id   bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    direction         text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    -- author: contact (inbound), bot (AI reply) or human (operator).
    author            text NOT NULL CHECK (author IN ('contact', 'bot', 'human')),
    body              text NOT NULL DEFAULT '',
    media             jsonb NOT NULL DEFAULT '[]',
    status            text NOT NULL,
    error_code        text,
    error_reason      text,
    twilio_sid        text UNIQUE,
    -- For a bot reply: the inbound message that closed the turn it answers.
    -- Unique, so a retried turn can never write a second reply.
    reply_to_id       bigint UNIQUE REFERENCES messages (id) ON DELETE CASCADE,
    -- Inbound messages that arrived while a human had the conversation.
    during_handoff    boolean NOT NULL DEFAULT false,
    agent             text,
    -- Outbound: when the send job first claimed it (for Twilio list look-ups).
    send_started_at   timestamptz,
    credits_reserved  integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, id);
CREATE INDEX messages_tenant_idx ON messages (tenant_id, id DESC);

-- The per-message timeline that GET /messages/{id}/trace shows.
CREATE TABLE message_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    message_id  bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX message_events_message_idx ON message_events (message_id, id);

-- Every credit movement. A message is debited once and refunded once at most.
CREATE TABLE credit_ledger (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    amount      bigint NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('topup', 'reply', 'refund')),
    message_id  bigint REFERENCES messages (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX credit_ledger_message_reason_uq ON credit_ledger (message_id, reason) WHERE message_id IS NOT NULL;
CREATE INDEX credit_ledger_tenant_idx ON credit_ledger (tenant_id, id);

-- Status callbacks already applied: (MessageSid, MessageStatus) is the dedupe key.
CREATE TABLE status_callbacks (
    message_sid  text NOT NULL,
    status       text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_sid, status)
);

-- Agents a tenant's routing agent chooses from.
CREATE TABLE agents (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    system_prompt  text NOT NULL DEFAULT '',
    model          text NOT NULL DEFAULT '',
    tools          text[] NOT NULL DEFAULT '{handoff_to_human}',
    -- keywords route a message to this agent offline; faq answers offline.
    keywords       text[] NOT NULL DEFAULT '{}',
    faq            jsonb NOT NULL DEFAULT '[]',
    is_default     boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- A conversation points at its newest inbound message, set only when the
-- message row really is inserted: a redelivered MessageSid (ON CONFLICT DO
-- NOTHING) never moves it, even when ingest batches many messages in one
-- transaction. A turn job for an older message is thereby superseded.
-- +goose StatementBegin
CREATE FUNCTION conversa_track_last_inbound() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversations
    SET last_inbound_message_id = NEW.id, last_inbound_at = NEW.created_at
    WHERE id = NEW.conversation_id
      AND (last_inbound_message_id IS NULL OR last_inbound_message_id < NEW.id);
    RETURN NULL;
END $$;
-- +goose StatementEnd
CREATE TRIGGER messages_track_last_inbound AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.direction = 'inbound') EXECUTE FUNCTION conversa_track_last_inbound();

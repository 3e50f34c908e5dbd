-- +goose Up
-- 0016_events: event webhooks (README, "Event webhooks"): a tenant's
-- endpoints, and the event log written in the same transaction as the change
-- each event reports.

-- One endpoint of a tenant's own systems. events NULL means every type.
CREATE TABLE webhook_endpoints (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    url             text NOT NULL CHECK (url ~ '^https?://'),
    events          text[],
    include_bodies  boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Why a conversation last changed hands (an event's "reason"): a code, never
-- free text. Set by whoever changes the status, in the same UPDATE.
ALTER TABLE conversations ADD COLUMN handoff_reason text;

-- The event log. An event holds ids and codes only (statuses, error codes,
-- reasons, counts): the personal parts of a payload (addresses, bodies) are
-- read from the message when the event is delivered or listed, so erasing a
-- contact or a body erases them here too, with nothing to rewrite.
--
-- seq is given by the relay (jobs.EventRelay), one relay transaction at a
-- time, when it turns the event into its conversa.event jobs: ids are taken
-- in insert order but committed in any order, while seq follows commits, so
-- GET /events?after= (which pages by seq) never skips an event that
-- committed late. An event without seq is not relayed yet.
CREATE TABLE events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type             text NOT NULL CHECK (type IN ('message.received', 'message.replied', 'message.status',
                         'conversation.handoff', 'turn.gave_up', 'broadcast.finished')),
    message_id       bigint,
    conversation_id  bigint,
    data             jsonb NOT NULL DEFAULT '{}',
    seq              bigint UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_unrelayed_idx ON events (id) WHERE seq IS NULL;
CREATE INDEX events_tenant_seq_idx ON events (tenant_id, seq) WHERE seq IS NOT NULL;
CREATE INDEX events_created_idx ON events (created_at);
CREATE SEQUENCE event_relay_seq;

-- conversa_wants_events is the rule: events are recorded only while the
-- tenant has an endpoint, so a tenant without one pays one index probe per
-- change and writes nothing. A plain SQL expression, so the planner inlines
-- it into the triggers' IF. conversa_record_event is the one writer, used by
-- the triggers below and by store.RecordEvent.
-- +goose StatementBegin
CREATE FUNCTION conversa_wants_events(p_tenant uuid) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.tenant_id = p_tenant)
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE FUNCTION conversa_record_event(p_tenant uuid, p_type text, p_message bigint, p_conversation bigint, p_data jsonb)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO events (tenant_id, type, message_id, conversation_id, data)
    VALUES (p_tenant, p_type, p_message, p_conversation, p_data)
$$;
-- +goose StatementEnd

-- message.received (an inbound message stored) and message.replied (a bot
-- reply written): on the insert of the message row itself, so a redelivered
-- MessageSid (ON CONFLICT DO NOTHING) or a rolled-back turn writes none.
-- +goose StatementBegin
CREATE FUNCTION conversa_message_inserted_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF conversa_wants_events(NEW.tenant_id) THEN
      PERFORM conversa_record_event(NEW.tenant_id,
        CASE WHEN NEW.direction = 'inbound' THEN 'message.received' ELSE 'message.replied' END,
        NEW.id, NEW.conversation_id, '{}');
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd
CREATE TRIGGER messages_inserted_event AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.direction = 'inbound' OR NEW.author = 'bot')
    EXECUTE FUNCTION conversa_message_inserted_event();

-- message.status: an outbound message reached a status Twilio reports (or
-- failed). Our own states (pending, claimed) are not events.
-- +goose StatementBegin
CREATE FUNCTION conversa_message_status_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF conversa_wants_events(NEW.tenant_id) THEN
      PERFORM conversa_record_event(NEW.tenant_id, 'message.status', NEW.id, NEW.conversation_id,
        jsonb_build_object('status', NEW.status, 'twilio_sid', NEW.twilio_sid, 'error_code', NEW.error_code,
                           'error_reason', NEW.error_reason));
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd
CREATE TRIGGER messages_status_event AFTER UPDATE OF status ON messages
    FOR EACH ROW WHEN (NEW.direction = 'outbound' AND NEW.status IS DISTINCT FROM OLD.status
                       AND NEW.status NOT IN ('pending', 'claimed'))
    EXECUTE FUNCTION conversa_message_status_event();

-- conversation.handoff: a conversation went to a person or back to the bot.
-- +goose StatementBegin
CREATE FUNCTION conversa_handoff_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF conversa_wants_events(NEW.tenant_id) THEN
      PERFORM conversa_record_event(NEW.tenant_id, 'conversation.handoff', NULL, NEW.id,
        jsonb_build_object('to', NEW.status, 'reason', NEW.handoff_reason));
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd
CREATE TRIGGER conversations_handoff_event AFTER UPDATE OF status ON conversations
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('human', 'bot'))
    EXECUTE FUNCTION conversa_handoff_event();

-- +goose Down
DROP TRIGGER conversations_handoff_event ON conversations;
DROP FUNCTION conversa_handoff_event();
DROP TRIGGER messages_status_event ON messages;
DROP FUNCTION conversa_message_status_event();
DROP TRIGGER messages_inserted_event ON messages;
DROP FUNCTION conversa_message_inserted_event();
DROP FUNCTION conversa_record_event(uuid, text, bigint, bigint, jsonb);
DROP FUNCTION conversa_wants_events(uuid);
DROP SEQUENCE event_relay_seq;
DROP TABLE events;
ALTER TABLE conversations DROP COLUMN handoff_reason;
DROP TABLE webhook_endpoints;

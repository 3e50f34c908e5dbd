-- +goose Up
-- 0017_plan_once: the events rule and writer (0016) as PL/pgSQL, so each
-- session plans their statements once. As SQL functions they could not be
-- inlined (an EXISTS subquery is not an expression the planner inlines), and
-- a SQL function that is not inlined plans its body again on every call: 3.4
-- plannings per replied message, from the triggers on messages and
-- conversations, for tenants without any endpoint (bench figure 7,
-- -track-planning). Same names, arguments and results.

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION conversa_wants_events(p_tenant uuid) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.tenant_id = p_tenant);
END $$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION conversa_record_event(p_tenant uuid, p_type text, p_message bigint, p_conversation bigint, p_data jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (tenant_id, type, message_id, conversation_id, data)
    VALUES (p_tenant, p_type, p_message, p_conversation, p_data);
END $$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION conversa_wants_events(p_tenant uuid) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.tenant_id = p_tenant)
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION conversa_record_event(p_tenant uuid, p_type text, p_message bigint, p_conversation bigint, p_data jsonb)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO events (tenant_id, type, message_id, conversation_id, data)
    VALUES (p_tenant, p_type, p_message, p_conversation, p_data)
$$;
-- +goose StatementEnd

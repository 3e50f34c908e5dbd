-- +goose Up
-- 0012_tools_knowledge: agents that act (HTTP tools whose calls are recorded,
-- so a retried turn never repeats one) and know (a knowledge base searched
-- with Postgres full-text search). See docs/tools.md.

-- An agent's HTTP tools: [{"name", "description", "parameters", "url",
-- "keywords"}], validated by the API (at most 16).
ALTER TABLE agents ADD COLUMN http_tools jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(http_tools) = 'array');

-- The text search configuration a tenant's documents and the customers'
-- messages are parsed with ('simple': no stemming, no stop words).
ALTER TABLE tenants ADD COLUMN knowledge_language regconfig NOT NULL DEFAULT 'simple';

-- One tool call of a turn, keyed by the turn (its closing inbound message)
-- and the call's place in it (round, index). The row is written, committed,
-- before the endpoint is called (the call as the model asked for it), and
-- its result after, before the turn goes on; a retried turn replays what is
-- recorded instead of asking the model again, and calls again only a call
-- with no result (a crash between the call and its record), with the same
-- arguments and Idempotency-Key.
CREATE TABLE tool_calls (
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    message_id      bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    round           integer NOT NULL CHECK (round BETWEEN 1 AND 4),
    idx             integer NOT NULL CHECK (idx >= 0),
    call_id         text NOT NULL,
    name            text NOT NULL,
    arguments       text NOT NULL,
    idempotency_key text NOT NULL,
    -- attempts counts the POSTs made (more than one only after a crash).
    attempts        integer NOT NULL DEFAULT 0,
    -- outcome is NULL until the call's result is recorded.
    outcome         text CHECK (outcome IN ('ok', 'timeout', 'http_error', 'bad_answer', 'network', 'refused', 'unknown_tool', 'bad_arguments')),
    http_status     integer,
    -- result is what the model was given: the endpoint's answer, or why it failed.
    result          text,
    latency_ms      integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (message_id, round, idx)
);

-- A tenant's knowledge documents; agents empty = every agent.
CREATE TABLE knowledge_docs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    agents      text[] NOT NULL DEFAULT '{}',
    bytes       integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- A document's passages, each indexed for full-text search in the tenant's
-- language (GIN on the tsvector: a search reads the index, not the table).
CREATE TABLE knowledge_passages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    doc_id      bigint NOT NULL REFERENCES knowledge_docs (id) ON DELETE CASCADE,
    ord         integer NOT NULL,
    body        text NOT NULL,
    language    regconfig NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (to_tsvector(language, body)) STORED,
    UNIQUE (doc_id, ord)
);
CREATE INDEX knowledge_passages_tsv ON knowledge_passages USING gin (tsv);

-- +goose Down
DROP TABLE knowledge_passages;
DROP TABLE knowledge_docs;
DROP TABLE tool_calls;
ALTER TABLE tenants DROP COLUMN knowledge_language;
ALTER TABLE agents DROP COLUMN http_tools;

-- +goose Up
-- 0008_console: the operator console's server-side sessions, and the form
-- keys that make a person's Send idempotent (a double click sends once).

-- A signed-in browser. The cookie holds a random token; only its SHA-256 is
-- stored, so a database dump signs no one in. An admin session has no tenant
-- until the operator picks one.
CREATE TABLE console_sessions (
    token_hash  bytea PRIMARY KEY,
    admin       boolean NOT NULL DEFAULT false,
    tenant_id   uuid REFERENCES tenants (id) ON DELETE CASCADE,
    -- The synchronizer token every state-changing form must carry.
    csrf_token  text NOT NULL CHECK (csrf_token <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CHECK (admin OR tenant_id IS NOT NULL)
);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

-- One row per Reply form the console rendered and a person sent: the form's
-- random key names the message it created, so a repeat of the same form
-- (double click, browser resubmit) finds it instead of sending again.
CREATE TABLE console_sends (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    form_key    text NOT NULL CHECK (form_key <> ''),
    message_id  bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, form_key)
);

-- +goose Down
DROP TABLE console_sends;
DROP TABLE console_sessions;

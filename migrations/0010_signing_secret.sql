-- +goose Up
-- 0010_signing_secret: each tenant's signing secret, which signs what Conversa
-- sends to the tenant's own systems (tool calls, event webhooks). Unlike the
-- API key it must be usable, so it is sealed with SECRET_KEY, not hashed.
-- After a rotation the previous secret stays valid until
-- signing_secret_prev_until (24 h), and requests carry both signatures.
ALTER TABLE tenants
    ADD COLUMN signing_secret_enc bytea,
    ADD COLUMN signing_secret_prev_enc bytea,
    ADD COLUMN signing_secret_prev_until timestamptz;

-- +goose Down
ALTER TABLE tenants
    DROP COLUMN signing_secret_prev_until,
    DROP COLUMN signing_secret_prev_enc,
    DROP COLUMN signing_secret_enc;

-- +goose Up
-- 0014_privacy: erasure of a contact and retention of message bodies
-- (README, "Erasure and retention"; the statements are store/erasure.go's).

-- erased_at is when a message's personal data (body, media, transcript,
-- the personal parts of its trace) was erased, by a contact's erasure or by
-- the tenant's retention. A late writer (a voice note's transcript) leaves
-- an erased message alone.
ALTER TABLE messages ADD COLUMN erased_at timestamptz;

-- retention_days: message bodies older than this many days are erased by the
-- periodic conversa.retention job. NULL keeps them forever.
ALTER TABLE tenants ADD COLUMN retention_days integer
    CHECK (retention_days > 0 AND retention_days <= 36500);

-- The conversation an Idempotency-Key's stored answer is about (a person's
-- message holds its body), so erasing the contact erases the answer too.
ALTER TABLE idempotency_keys ADD COLUMN conversation_id bigint;
CREATE INDEX idempotency_keys_conversation_idx ON idempotency_keys (conversation_id)
    WHERE conversation_id IS NOT NULL;

-- The audit trail of erasures: who asked (requested_by: "admin",
-- "tenant_key", "cli", "retention"), when, which contact (its internal id:
-- the contact row stays, anonymous), and how many rows of each table were
-- erased. It never holds the address or anything else erased.
CREATE TABLE erasures (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('contact', 'retention')),
    contact_id    bigint REFERENCES contacts (id) ON DELETE SET NULL,
    requested_by  text NOT NULL CHECK (requested_by <> ''),
    rows          jsonb NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasures_tenant_idx ON erasures (tenant_id, id);

-- +goose Down
DROP TABLE erasures;
DROP INDEX idempotency_keys_conversation_idx;
ALTER TABLE idempotency_keys DROP COLUMN conversation_id;
ALTER TABLE tenants DROP COLUMN retention_days;
ALTER TABLE messages DROP COLUMN erased_at;

-- +goose Up
-- 0004_credit_stripes: a tenant's balance is spread over 16 rows.
--
-- Every reply debits its tenant. With the balance in one tenants row, every
-- turn of a tenant queued on that row's lock from its debit to its commit,
-- and the row's chain of dead versions made each update slower: in the
-- sustained benchmark 802 of ~900 samples of active queries were turns
-- waiting on that one UPDATE. A debit now takes whichever stripe is free and
-- can pay (store.DebitReply); the balance is the stripes' sum, and
-- credit_ledger still records every movement.
CREATE TABLE credit_stripes (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    stripe     smallint NOT NULL CHECK (stripe >= 0 AND stripe < 16),
    credits    bigint NOT NULL CHECK (credits >= 0),
    PRIMARY KEY (tenant_id, stripe)
);
INSERT INTO credit_stripes (tenant_id, stripe, credits)
SELECT id, 0, credits FROM tenants WHERE credits > 0;
ALTER TABLE tenants DROP COLUMN credits;

-- +goose Down
ALTER TABLE tenants ADD COLUMN credits bigint NOT NULL DEFAULT 0;
UPDATE tenants t SET credits = COALESCE((SELECT sum(s.credits) FROM credit_stripes s WHERE s.tenant_id = t.id), 0);
DROP TABLE credit_stripes;

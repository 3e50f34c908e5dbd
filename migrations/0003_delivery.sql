-- +goose Up
-- 0003_delivery: the Postgres fallback of per-number send pacing.

-- send_pacing is a GCRA bucket per sender number: tat is the theoretical
-- arrival time of the next send slot. Used when Redis is unset or down; Redis
-- keeps the same state under conversa:pace:<address>.
CREATE TABLE send_pacing (
    address  text PRIMARY KEY,
    tat      timestamptz NOT NULL
);

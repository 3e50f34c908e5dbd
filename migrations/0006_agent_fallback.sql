-- +goose Up
-- 0006_agent_fallback: what an agent tells the customer when the bot gives
-- up on an unavailable LLM and hands the conversation to a person
-- (LLM_GIVE_UP; see README, "A real LLM"). Empty means the built-in notice.
ALTER TABLE agents ADD COLUMN fallback_message text NOT NULL DEFAULT ''
    CHECK (char_length(fallback_message) <= 1600);

-- +goose Down
ALTER TABLE agents DROP COLUMN fallback_message;

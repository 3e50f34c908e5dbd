-- +goose Up
-- 0009_media: voice notes and images reach the agent (docs/operations.md, "Media").

-- The transcript of an inbound message's voice note(s), written once by the
-- first turn that transcribed them; a retried turn reuses it. NULL: not
-- transcribed (no voice note, or transcription failed).
ALTER TABLE messages ADD COLUMN transcript text;

-- An agent with vision gets inbound images as image parts; without, "[image]".
ALTER TABLE agents ADD COLUMN vision boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE agents DROP COLUMN vision;
ALTER TABLE messages DROP COLUMN transcript;

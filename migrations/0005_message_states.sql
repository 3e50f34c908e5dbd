-- +goose Up
-- 0005_message_states: the database holds the message state machine's
-- statuses (store/status.go, docs/delivery.md).
--
-- "sending" used to mean both our claim before calling Twilio and Twilio's
-- own "sending"; a claim is now "claimed", and a claimed message never has
-- a Twilio SID. Claims of an older release are moved over first.
UPDATE messages SET status = 'claimed'
WHERE direction = 'outbound' AND status = 'sending' AND twilio_sid IS NULL;

ALTER TABLE messages
    ADD CONSTRAINT messages_status_check CHECK (status IN (
        'received', 'pending', 'claimed', 'queued', 'accepted', 'scheduled',
        'sending', 'sent', 'delivered', 'read', 'failed', 'undelivered')),
    ADD CONSTRAINT messages_direction_status_check CHECK ((direction = 'inbound') = (status = 'received')),
    ADD CONSTRAINT messages_claimed_unsent_check CHECK (status <> 'claimed' OR twilio_sid IS NULL);

-- +goose Down
ALTER TABLE messages
    DROP CONSTRAINT messages_claimed_unsent_check,
    DROP CONSTRAINT messages_direction_status_check,
    DROP CONSTRAINT messages_status_check;
UPDATE messages SET status = 'sending' WHERE status = 'claimed';

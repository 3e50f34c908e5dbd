// Package jobs holds River job args and workers: conversa.reply (the AI turn)
// and conversa.send (the outbound send), with the Twilio sender and its error
// taxonomy. Every worker is idempotent: running it twice has the effect of
// running it once.
package jobs

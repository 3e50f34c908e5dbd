// Package jobs holds the River workers: conversa.reply (the AI turn) and
// conversa.send (the outbound send: one attempt, one settlement; see
// docs/delivery.md), the periodic jobs (reconciliation, stuck turns,
// cleanup) and the per-number pacer. Twilio is reached through
// internal/twilio (the client and its error taxonomy). Every worker is
// idempotent: running it twice has the effect of running it once.
//
// It may import store, agents, jobs/jobargs (the job args, which the HTTP
// edge imports instead of this package), internal/twilio, internal/media,
// River and go-redis.
package jobs

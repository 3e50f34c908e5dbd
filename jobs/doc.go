// Package jobs holds the River workers: conversa.reply (the AI turn) and
// conversa.send (the outbound send: one attempt, one settlement; see
// docs/delivery.md), with the Twilio sender, its error taxonomy and the
// per-number pacer. Every worker is idempotent: running it twice has the
// effect of running it once.
//
// It may import store, agents and jobs/jobargs (the job args, which the HTTP
// edge imports instead of this package), River, twilio-go and go-redis.
package jobs

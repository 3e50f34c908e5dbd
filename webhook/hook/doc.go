// Package hook is Twilio's side of the HTTP edge: the inbound-message webhook
// (POST /twilio/inbound) and the delivery-status callback (POST
// /twilio/status). Each decodes Twilio's form, checks its signature with the
// auth token of the account that owns the number, and commits what it
// carries in one transaction shared with concurrent webhooks (group commit):
// an inbound message with its conversa.reply job, a status with its refund
// and opt-out. The pipeline's guarantees are in docs/delivery.md.
//
// It may import store, jobs/jobargs (the job args, never the workers),
// internal/twilio/signature (never the Twilio REST client), internal/media
// (its host rule only), webhook/edge, Gin and River's insert types. It never
// calls an LLM or Twilio. webhook mounts its handlers; nothing else imports it.
package hook

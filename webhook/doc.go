// Package webhook is Conversa's HTTP edge (Gin): the Twilio inbound and status
// webhooks, the operator API, the River UI mount, health and metrics. It
// decodes and checks requests, writes through store in one transaction and
// inserts jobs; it never calls an LLM or Twilio.
package webhook

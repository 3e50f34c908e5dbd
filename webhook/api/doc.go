// Package api is the operator API at /api/v1 (JSON): tenants, their Twilio
// accounts, credits and agents, conversations, messages, a person's reply,
// handoff and a message's trace, with authentication (the admin token or a
// tenant's API key), tenant scoping in SQL and Idempotency-Key handling.
//
// operator.go holds the operator's actions (a person's message, a handoff,
// an agent's validation, a trace), shared by this API and the console
// (webhook/console), so each is decided once.
//
// It may import store, jobs/jobargs (the job args, never the workers),
// webhook/edge and Gin. It never calls an LLM or Twilio. Imported by webhook
// (which mounts the routes) and webhook/console.
package api

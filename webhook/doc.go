// Package webhook is Conversa's HTTP edge (Gin): NewHandler puts every route
// in one place, composing Twilio's webhooks (webhook/hook), the operator API
// (webhook/api) and the River UI mount behind the admin token, with what
// every route shares: rate limits, health and readiness, and metrics.
// NewWorkerHandler serves a work process's probes and metrics.
//
// The edge decodes and checks requests, writes through store in one
// transaction and inserts jobs; it never calls an LLM or Twilio.
//
// Packages under webhook/ and what they may import:
//
//	webhook          hook, api, edge, store, jobs/jobargs, internal/media, Gin, River, riverui
//	webhook/hook     edge, store, jobs/jobargs, internal/twilio/signature, internal/media
//	webhook/api      edge, store, jobs/jobargs
//	webhook/console  api (the shared operator actions), edge, store
//	webhook/edge     store, pgx, River's insert types, Gin (a leaf)
//
// None of them imports jobs (the workers), agents or internal/twilio's REST
// client, so the edge links neither the LLM SDK nor twilio-go:
// `go list -deps ./webhook/... | grep -E 'openai|twilio-go'` prints nothing.
package webhook

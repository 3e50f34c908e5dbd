// Package webhook is Conversa's HTTP edge (Gin): the Twilio inbound and status
// webhooks, the operator API, the River UI mount, health and metrics. It
// decodes and checks requests, writes through store in one transaction and
// inserts jobs; it never calls an LLM or Twilio.
//
// It may import store and jobs/jobargs (never jobs: the edge links neither
// the LLM SDK nor twilio-go's REST client; `go list -deps ./webhook/...`
// shows it), Gin, River and riverui, and twilio-go's client package for
// signature checks only.
package webhook

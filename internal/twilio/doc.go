// Package twilio is Conversa's one adapter to Twilio's REST API (through
// twilio-go): the Client that creates, fetches and lists messages at
// TWILIO_API_URL with a per-request timeout, and the error taxonomy that
// sorts what Twilio answered into retry, permanent or ambiguous (Classify)
// and a fetch's failure into not found, unauthorized, rate limited or
// unavailable (ClassifyFetch). Request signatures are in the leaf
// sub-package twilio/signature, which links no twilio-go, so the HTTP edge
// can check them.
//
// It may import twilio-go and the standard library. Only the conversa.send
// and conversa.reconcile workers (package jobs) and cmd/conversa use the
// Client: every outbound message is sent by its conversa.send job
// (docs/delivery.md).
package twilio

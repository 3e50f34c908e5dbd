// Package signature computes and checks Twilio's X-Twilio-Signature on form
// POSTs (webhooks and status callbacks): Sign for whoever posts like Twilio
// (the sandbox, the demo, the test poster, bench and chaos), Valid for the
// HTTP edge.
//
// It is a leaf: the standard library only, so the edge links no twilio-go.
package signature

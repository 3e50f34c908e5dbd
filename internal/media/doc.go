// Package media fetches inbound attachments from Twilio: which hosts a media
// URL may point at (Twilio's, or the host name of TWILIO_API_URL), and a
// bounded, streaming fetch with the owning account's credentials that follows
// Twilio's redirect to its media storage, applying the host rule on every
// hop and refusing private and loopback addresses unless allowed.
//
// It decides nothing about what the agent sees: jobs does that (see
// docs/operations.md, "Media").
package media

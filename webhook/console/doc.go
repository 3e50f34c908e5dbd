// Package console is the operator console at /console/: server-rendered
// pages (html/template) where a business's staff read conversations, take
// one over from the bot, answer the customer, read a message's trace, edit
// agents and see their usage.
//
// Everything it serves is embedded: templates/ and static/ (htmx, pinned and
// vendored, see static/VENDOR.md). Pages work as plain forms without
// JavaScript; with it, htmx polls the lists for live updates and submits
// forms in place. Sessions live in Postgres (console_sessions), so a fleet of
// `serve` processes shares them.
//
// It decides nothing the operator API decides differently: a person's
// message, a handoff, an agent's validation and a trace go through the same
// functions (webhook/api/operator.go) as /api/v1, and every query is
// scoped to the session's tenant, so another tenant's id is 404.
//
// It may import webhook/api (the shared operator actions), webhook/edge and
// store; jobs' args only through webhook/api. Nothing imports it but
// cmd/conversa.
package console

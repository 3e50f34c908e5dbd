// Package agents decides what the bot says in a conversation turn: the
// routing agent picks one of the tenant's agents, that agent answers through
// an LLM provider (offline rules or any OpenAI-compatible server), and the
// memory policy says which past turns the agent sees.
//
// Everything here returns decisions as data (which agent and why, the reply
// text, a handoff request, token usage). It never writes SQL and never
// enqueues jobs: the conversa.reply worker in package jobs commits what this
// package decides.
//
// It speaks store's domain vocabulary (store.Agent is its Agent, store.Author
// says who wrote a turn) and may import store for those types only, never to
// run a query; besides, openai-go and the standard library.
package agents

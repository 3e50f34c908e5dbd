// Package jobargs holds the River job args of Conversa's jobs (kinds, queues,
// uniqueness) and the insert middleware, apart from the workers, so the HTTP
// edge can insert jobs without linking the workers' LLM and Twilio clients.
// It is a leaf: it imports River only.
package jobargs

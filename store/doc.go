// Package store holds every SQL statement and every Redis call Conversa
// makes, and the domain vocabulary they are written in: the message state
// machine (status.go: statuses, the one transition table), conversation
// statuses, authors, directions and channel kinds.
//
// Functions take a DBTX (a pool, a connection or a transaction), so the caller
// owns the transaction: the webhook commits a message together with its job,
// the turn commits a reply together with its debit (CommitTurn) and its own
// completion.
//
// It may import pgx, go-redis and the standard library; never the workers,
// the HTTP edge or an SDK.
package store

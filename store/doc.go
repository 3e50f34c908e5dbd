// Package store holds every SQL statement and every Redis call Conversa makes.
//
// Functions take a DBTX (a pool, a connection or a transaction), so the caller
// owns the transaction: the webhook commits a message together with its job,
// the turn commits a reply together with its debit and its own completion.
package store

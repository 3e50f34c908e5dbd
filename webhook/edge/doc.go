// Package edge is what the packages of the HTTP edge share: the database and
// job-insert interfaces they are built on (DB, Inserter), the request-body
// limit (ReadBody, ErrTooLarge) and the cleaning of outside text (Clean).
//
// It is a leaf of the edge: it may import store, pgx, River's job types and
// Gin; nothing under webhook/ imports the other way.
package edge

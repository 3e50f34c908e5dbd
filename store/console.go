package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// ConsoleSession is a signed-in browser of the operator console. Admin
// sessions have no tenant until the operator picks one.
type ConsoleSession struct {
	Admin     bool      `db:"admin"`
	TenantID  *string   `db:"tenant_id"`
	CSRFToken string    `db:"csrf_token"`
	ExpiresAt time.Time `db:"expires_at"`
}

// CreateConsoleSession stores a session under the hash of its cookie token.
func CreateConsoleSession(ctx context.Context, db DBTX, tokenHash []byte, s ConsoleSession) error {
	_, err := db.Exec(ctx, `INSERT INTO console_sessions (token_hash, admin, tenant_id, csrf_token, expires_at)
		VALUES ($1, $2, $3, $4, $5)`, tokenHash, s.Admin, s.TenantID, s.CSRFToken, s.ExpiresAt)
	if err != nil {
		return fmt.Errorf("create console session: %w", err)
	}
	return nil
}

// ConsoleSessionByHash returns the unexpired session with that token hash.
func ConsoleSessionByHash(ctx context.Context, db DBTX, tokenHash []byte, now time.Time) (ConsoleSession, error) {
	rows, err := db.Query(ctx, `SELECT admin, tenant_id, csrf_token, expires_at FROM console_sessions
		WHERE token_hash = $1 AND expires_at > $2`, tokenHash, now)
	if err != nil {
		return ConsoleSession{}, fmt.Errorf("console session: %w", err)
	}
	s, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[ConsoleSession])
	if err != nil {
		return ConsoleSession{}, notFound(err)
	}
	return s, nil
}

// SetConsoleSessionTenant points an admin session at the tenant it acts for.
func SetConsoleSessionTenant(ctx context.Context, db DBTX, tokenHash []byte, tenantID string) error {
	tag, err := db.Exec(ctx, `UPDATE console_sessions SET tenant_id = t.id
		FROM tenants t WHERE token_hash = $1 AND admin AND t.id::text = $2`, tokenHash, tenantID)
	if err != nil {
		return fmt.Errorf("set console session tenant: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteConsoleSession signs a session out, and drops every expired one.
func DeleteConsoleSession(ctx context.Context, db DBTX, tokenHash []byte, now time.Time) error {
	_, err := db.Exec(ctx, `DELETE FROM console_sessions WHERE token_hash = $1 OR expires_at <= $2`, tokenHash, now)
	if err != nil {
		return fmt.Errorf("delete console session: %w", err)
	}
	return nil
}

// ClaimConsoleSend records that the console form formKey is being sent. It
// returns 0 when the key is new (the caller sends and then calls
// ClaimConsoleSend is the first step of sending the console form formKey:
// it returns 0 when the key is new (the caller sends and then calls
// RecordConsoleSend in the same transaction), or the id of the message a
// previous submission of the same form created. A concurrent submission of
// the same key waits for the first one's transaction to end.
func ClaimConsoleSend(ctx context.Context, tx DBTX, tenantID, formKey string) (int64, error) {
	// The key's lock, held to the end of tx: a racing twin blocks here until
	// the first commits, then finds its row.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))`, tenantID, formKey); err != nil {
		return 0, fmt.Errorf("claim console send: %w", err)
	}
	var id int64
	err := tx.QueryRow(ctx, `SELECT message_id FROM console_sends WHERE tenant_id = $1 AND form_key = $2`, tenantID, formKey).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("claim console send: %w", err)
	}
	return id, nil
}

// RecordConsoleSend names the message the console form formKey created.
func RecordConsoleSend(ctx context.Context, tx DBTX, tenantID, formKey string, messageID int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO console_sends (tenant_id, form_key, message_id) VALUES ($1, $2, $3)`,
		tenantID, formKey, messageID)
	if err != nil {
		return fmt.Errorf("record console send: %w", err)
	}
	return nil
}

// ConversationSummary is a conversation as the console lists it: with its
// last message.
type ConversationSummary struct {
	ConversationView
	LastBody      *string    `db:"last_body"`
	LastDirection *string    `db:"last_direction"`
	LastAt        *time.Time `db:"last_at"`
}

// ListConversationSummaries lists the conversations in scope, the one with
// the newest message first, optionally with one status and a contact address
// containing search (digits of a number, say).
func ListConversationSummaries(ctx context.Context, db DBTX, scope Scope, status, search string, limit int) ([]ConversationSummary, error) {
	var args []any
	where := scope.filter("v.tenant_id", &args)
	if status != "" {
		args = append(args, status)
		where += " AND v.status = $" + strconv.Itoa(len(args))
	}
	if search != "" {
		args = append(args, search)
		where += " AND strpos(ct.address, $" + strconv.Itoa(len(args)) + ") > 0"
	}
	args = append(args, limit)
	rows, err := db.Query(ctx, `SELECT c.*, lm.* FROM (`+conversationViewSelect+` WHERE `+where+`) c
		LEFT JOIN LATERAL (
			SELECT m.body AS last_body, m.direction AS last_direction, m.created_at AS last_at
			FROM messages m WHERE m.conversation_id = c.id ORDER BY m.id DESC LIMIT 1
		) lm ON true
		ORDER BY COALESCE(lm.last_at, c.created_at) DESC, c.id DESC LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("list conversation summaries: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[ConversationSummary])
	if err != nil {
		return nil, fmt.Errorf("list conversation summaries: %w", err)
	}
	return list, nil
}

// ListAgents returns a tenant's agents, the default first, then by name.
func ListAgents(ctx context.Context, db DBTX, tenantID string) ([]Agent, error) {
	rows, err := db.Query(ctx, listAgentsSQL, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Agent, error) {
		var a Agent
		var faq []byte
		if err := r.Scan(&a.Name, &a.SystemPrompt, &a.Model, &a.Tools, &a.Keywords, &faq, &a.IsDefault, &a.FallbackMessage, &a.Vision, &a.HTTPTools, &a.UpdatedAt); err != nil {
			return a, err
		}
		return a, json.Unmarshal(faq, &a.FAQ)
	})
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return list, nil
}

// ListTenants returns every tenant, by name (for the operator's picker).
func ListTenants(ctx context.Context, db DBTX) ([]Tenant, error) {
	rows, err := db.Query(ctx, `SELECT `+tenantColumns+` FROM tenants ORDER BY name, id LIMIT 1000`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[Tenant])
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return list, nil
}

// DayCount is how many of something happened on one UTC day.
type DayCount struct {
	Day   time.Time `db:"day"`
	Count int64     `db:"count"`
}

// RepliesPerDay counts a tenant's outbound messages (bot and person) per UTC
// day for the days days up to and including today's, every day present.
func RepliesPerDay(ctx context.Context, db DBTX, tenantID string, now time.Time, days int) ([]DayCount, error) {
	rows, err := db.Query(ctx, `
		SELECT d.day, COUNT(m.id) AS count
		FROM generate_series(date_trunc('day', $2::timestamptz AT TIME ZONE 'UTC') - ($3::int - 1) * interval '1 day',
		                     date_trunc('day', $2::timestamptz AT TIME ZONE 'UTC'), interval '1 day') AS d(day)
		LEFT JOIN messages m ON m.tenant_id = $1 AND m.direction = 'outbound'
		     AND m.created_at >= d.day AT TIME ZONE 'UTC' AND m.created_at < (d.day + interval '1 day') AT TIME ZONE 'UTC'
		GROUP BY d.day ORDER BY d.day`, tenantID, now, days)
	if err != nil {
		return nil, fmt.Errorf("replies per day: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[DayCount])
	if err != nil {
		return nil, fmt.Errorf("replies per day: %w", err)
	}
	return list, nil
}

// FailedMessages returns a tenant's newest failed or undelivered messages.
func FailedMessages(ctx context.Context, db DBTX, tenantID string, limit int) ([]Message, error) {
	rows, err := db.Query(ctx, `SELECT `+MessageColumns+` FROM messages
		WHERE tenant_id = $1 AND status IN ('failed', 'undelivered') ORDER BY id DESC LIMIT $2`, tenantID, limit)
	if err != nil {
		return nil, fmt.Errorf("failed messages: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[Message])
	if err != nil {
		return nil, fmt.Errorf("failed messages: %w", err)
	}
	return list, nil
}

// RecentMessages returns a conversation's newest limit messages in scope,
// oldest first (the end of a long conversation is what a person reads).
func RecentMessages(ctx context.Context, db DBTX, scope Scope, conversationID int64, limit int) ([]Message, error) {
	args := []any{conversationID, limit}
	where := scope.filter("tenant_id", &args)
	rows, err := db.Query(ctx, `SELECT * FROM (SELECT `+MessageColumns+` FROM messages
		WHERE conversation_id = $1 AND `+where+` ORDER BY id DESC LIMIT $2) m ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("recent messages: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[Message])
	if err != nil {
		return nil, fmt.Errorf("recent messages: %w", err)
	}
	return list, nil
}

package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The knowledge base (migration 0012; docs/tools.md): a tenant's documents,
// split into passages indexed with Postgres full-text search in the
// tenant's language. Each turn searches it for the customer's messages.

// KnowledgeDoc is a document as listed: its passages, not its text.
type KnowledgeDoc struct {
	ID        int64     `db:"id" json:"-"`
	Name      string    `db:"name" json:"name"`
	Agents    []string  `db:"agents" json:"agents"`
	Passages  int       `db:"passages" json:"passages"`
	Bytes     int       `db:"bytes" json:"bytes"`
	UpdatedAt time.Time `db:"updated_at" json:"updated_at"`
}

// Passage is one passage a search found.
type Passage struct {
	Doc   string  `db:"doc" json:"doc"`
	Ord   int     `db:"ord" json:"passage"`
	Body  string  `db:"body" json:"-"`
	Score float64 `db:"score" json:"score"`
}

// ErrUnknownLanguage is a knowledge language Postgres has no text search
// configuration for.
var ErrUnknownLanguage = errors.New("unknown text search language")

// passageChars is the size a passage is cut at: a paragraph or a few, small
// enough for a model's context and for an offline answer.
const passageChars = 900

// SplitPassages cuts a markdown or plain-text document into passages:
// paragraphs (blocks between blank lines) gathered up to passageChars, a
// longer paragraph cut between sentences or words. Each passage starts with
// the markdown heading it sits under, without its #s, so a search for the
// heading's words finds the text below it.
func SplitPassages(text string) []string {
	text = strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\r", "\n")
	var out []string
	heading, chunk := "", ""
	flush := func() {
		if c := strings.TrimSpace(chunk); c != "" {
			if heading != "" {
				c = heading + "\n" + c
			}
			out = append(out, c)
		}
		chunk = ""
	}
	for _, block := range strings.Split(text, "\n\n") {
		block = strings.TrimSpace(block)
		if block == "" {
			continue
		}
		if first, rest, _ := strings.Cut(block, "\n"); strings.HasPrefix(first, "#") {
			flush()
			heading = strings.TrimSpace(strings.TrimLeft(first, "#"))
			if block = strings.TrimSpace(rest); block == "" {
				continue
			}
		}
		for _, piece := range cutLong(block, passageChars) {
			if chunk != "" && utf8.RuneCountInString(chunk)+utf8.RuneCountInString(piece) > passageChars {
				flush()
			}
			if chunk != "" {
				chunk += "\n\n"
			}
			chunk += piece
		}
	}
	flush()
	return out
}

// cutLong cuts s into pieces of at most n runes, after a sentence's end
// when there is one in the second half of the piece, else after a space.
func cutLong(s string, n int) []string {
	var out []string
	for utf8.RuneCountInString(s) > n {
		r := []rune(s)
		cut := -1
		for i := n - 1; i >= n/2; i-- {
			if strings.ContainsRune(".?!\n", r[i]) && (r[i+1] == ' ' || r[i+1] == '\n') {
				cut = i + 1
				break
			}
		}
		if cut < 0 {
			for i := n - 1; i > 0; i-- {
				if r[i] == ' ' {
					cut = i + 1
					break
				}
			}
		}
		if cut <= 0 {
			cut = n
		}
		out = append(out, strings.TrimSpace(string(r[:cut])))
		s = strings.TrimSpace(string(r[cut:]))
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// PutKnowledgeDoc creates or replaces a tenant's document: its passages
// are replaced in the same round trip (one implicit transaction), indexed
// in the tenant's language. It reports whether the document was created.
func PutKnowledgeDoc(ctx context.Context, db DBTX, tenantID, name string, agents []string, text string) (KnowledgeDoc, bool, error) {
	if agents == nil {
		agents = []string{}
	}
	passages := SplitPassages(text)
	ords := make([]int32, len(passages))
	for i := range passages {
		ords[i] = int32(i)
	}
	var d KnowledgeDoc
	var created bool
	b := &pgx.Batch{}
	b.Queue(`
		INSERT INTO knowledge_docs (tenant_id, name, agents, bytes) VALUES ($1, $2, $3, $4)
		ON CONFLICT (tenant_id, name) DO UPDATE SET agents = EXCLUDED.agents, bytes = EXCLUDED.bytes, updated_at = now()
		RETURNING id, name, agents, bytes, updated_at, xmax = 0 AS created`,
		tenantID, name, agents, len(text)).QueryRow(func(row pgx.Row) error {
		return row.Scan(&d.ID, &d.Name, &d.Agents, &d.Bytes, &d.UpdatedAt, &created)
	})
	// Separate statements: one statement's DELETE and INSERT would see the
	// same snapshot and collide on (doc_id, ord).
	b.Queue(`DELETE FROM knowledge_passages WHERE doc_id = (SELECT id FROM knowledge_docs WHERE tenant_id = $1 AND name = $2)`, tenantID, name)
	b.Queue(`
		INSERT INTO knowledge_passages (tenant_id, doc_id, ord, body, language)
		SELECT $1, d.id, n.ord, n.body, t.knowledge_language
		FROM knowledge_docs d JOIN tenants t ON t.id = d.tenant_id, unnest($3::int[], $4::text[]) AS n(ord, body)
		WHERE d.tenant_id = $1 AND d.name = $2`, tenantID, name, ords, passages)
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		if isForeignKeyViolation(err) {
			return d, false, ErrNotFound
		}
		return d, false, fmt.Errorf("put knowledge doc: %w", notFound(err))
	}
	d.Passages = len(passages)
	return d, created, nil
}

// ListKnowledgeDocs lists a tenant's documents after the id after, at most
// limit+1 (so the caller knows whether a further page exists).
func ListKnowledgeDocs(ctx context.Context, db DBTX, tenantID string, after int64, limit int) ([]KnowledgeDoc, error) {
	rows, err := db.Query(ctx, `
		SELECT d.id, d.name, d.agents, d.bytes, d.updated_at,
		       (SELECT count(*) FROM knowledge_passages p WHERE p.doc_id = d.id)::int AS passages
		FROM knowledge_docs d WHERE d.tenant_id = $1 AND d.id > $2 ORDER BY d.id LIMIT $3`, tenantID, after, limit+1)
	if err != nil {
		return nil, fmt.Errorf("list knowledge docs: %w", notFound(err))
	}
	docs, err := pgx.CollectRows(rows, pgx.RowToStructByName[KnowledgeDoc])
	if err != nil {
		return nil, fmt.Errorf("list knowledge docs: %w", notFound(err))
	}
	return docs, nil
}

// DeleteKnowledgeDoc removes a document and its passages at once;
// ErrNotFound when the tenant has no such document.
func DeleteKnowledgeDoc(ctx context.Context, db DBTX, tenantID, name string) error {
	tag, err := db.Exec(ctx, `DELETE FROM knowledge_docs WHERE tenant_id = $1 AND name = $2`, tenantID, name)
	if err != nil {
		return fmt.Errorf("delete knowledge doc: %w", notFound(err))
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// KnowledgeLanguage is the text search configuration of a tenant's knowledge base.
func KnowledgeLanguage(ctx context.Context, db DBTX, tenantID string) (string, error) {
	var lang string
	err := db.QueryRow(ctx, `SELECT knowledge_language::text FROM tenants WHERE id = $1`, tenantID).Scan(&lang)
	if err != nil {
		return "", fmt.Errorf("knowledge language: %w", notFound(err))
	}
	return lang, nil
}

// SetKnowledgeLanguage sets the text search configuration ("simple",
// "english", "portuguese", ...) of a tenant's knowledge base and reindexes
// its passages in it. An unknown one is ErrUnknownLanguage.
func SetKnowledgeLanguage(ctx context.Context, db DBTX, tenantID, lang string) error {
	b := &pgx.Batch{}
	var n int64
	b.Queue(`UPDATE tenants SET knowledge_language = $2::regconfig WHERE id = $1`, tenantID, lang).Exec(func(ct pgconn.CommandTag) error {
		n = ct.RowsAffected()
		return nil
	})
	b.Queue(`UPDATE knowledge_passages SET language = $2::regconfig WHERE tenant_id = $1 AND language <> $2::regconfig`, tenantID, lang)
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object
			return ErrUnknownLanguage
		}
		return fmt.Errorf("set knowledge language: %w", notFound(err))
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// searchCandidates bounds how many matching passages a search ranks, so a
// query of common words costs the same at 100,000 passages as at 1,000.
const searchCandidates = 1000

// maxSearchChars bounds the customer's words a search is built from.
const maxSearchChars = 2000

// SearchKnowledge returns the tenant's best passages for text, at most
// limit, for the agent (documents with no agents list serve every agent).
// The query is any of text's words, parsed in the tenant's language; the
// GIN index finds the passages holding one, ts_rank orders them.
func SearchKnowledge(ctx context.Context, db DBTX, tenantID, agent, text string, limit int) ([]Passage, error) {
	if r := []rune(text); len(r) > maxSearchChars {
		text = string(r[:maxSearchChars])
	}
	rows, err := db.Query(ctx, searchKnowledgeSQL, tenantID, agent, text, limit, searchCandidates)
	if err != nil {
		return nil, fmt.Errorf("search knowledge: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[Passage])
	if err != nil {
		return nil, fmt.Errorf("search knowledge: %w", err)
	}
	return out, nil
}

// searchKnowledgeSQL is SearchKnowledge's query (the benchmark EXPLAINs it).
const searchKnowledgeSQL = `
		WITH q AS (
			SELECT (SELECT string_agg(quote_literal(w.lexeme), ' | ')
			        FROM unnest(to_tsvector(t.knowledge_language, $3::text)) AS w)::tsquery AS query
			FROM tenants t WHERE t.id = $1
		)
		SELECT d.name AS doc, c.ord, c.body, ts_rank(c.tsv, q.query)::float8 AS score
		FROM q, LATERAL (
			SELECT p.doc_id, p.ord, p.body, p.tsv FROM knowledge_passages p
			WHERE p.tenant_id = $1 AND p.tsv @@ q.query LIMIT $5
		) c
		JOIN knowledge_docs d ON d.id = c.doc_id
		WHERE cardinality(d.agents) = 0 OR $2::text = ANY (d.agents)
		ORDER BY score DESC, d.name, c.ord
		LIMIT $4`

// SearchKnowledgeSQL is the search statement, for EXPLAIN in the benchmark.
func SearchKnowledgeSQL() string { return searchKnowledgeSQL }

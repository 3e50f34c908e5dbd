package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
)

func TestSplitPassagesKeepsHeadingsAndBoundsSize(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("A sentence about teeth. ", 100)
	got := store.SplitPassages("# Opening hours\n\nWe open at 9.\n\n## Prices\n\nA cleaning costs 80 EUR.\n\n" + long)
	require.Equal(t, "Opening hours\nWe open at 9.", got[0])
	require.Equal(t, "Prices\nA cleaning costs 80 EUR.", got[1])
	require.Greater(t, len(got), 3, "a long paragraph is cut")
	for _, p := range got {
		require.LessOrEqual(t, len([]rune(p)), 900+len("Prices\n"))
	}
}

func TestKnowledgeSearchRanksFiltersAndForgets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten := testdb.NewTenant(t, tx, 0)
	other := testdb.NewTenant(t, tx, 0)
	_, created, err := store.PutKnowledgeDoc(ctx, tx, ten.ID, "clinic.md", nil,
		"# Opening hours\n\nWe open Monday to Friday from 9 to 18.\n\n# Parking\n\nFree parking behind the building.")
	require.NoError(t, err)
	require.True(t, created)
	_, _, err = store.PutKnowledgeDoc(ctx, tx, ten.ID, "billing.md", []string{"billing"}, "Invoices are sent monthly; parking is not billed.")
	require.NoError(t, err)
	_, _, err = store.PutKnowledgeDoc(ctx, tx, other.ID, "secret.md", nil, "Parking parking parking for the other tenant.")
	require.NoError(t, err)

	found, err := store.SearchKnowledge(ctx, tx, ten.ID, "assistant", "Is there parking?", 3)
	require.NoError(t, err)
	require.Len(t, found, 1, "billing.md is for the billing agent; the other tenant's doc is not searched")
	require.Equal(t, "clinic.md", found[0].Doc)
	require.Contains(t, found[0].Body, "Free parking")
	require.Greater(t, found[0].Score, 0.0)

	found, err = store.SearchKnowledge(ctx, tx, ten.ID, "billing", "parking", 3)
	require.NoError(t, err)
	require.Len(t, found, 2)

	found, err = store.SearchKnowledge(ctx, tx, ten.ID, "assistant", "?!", 3)
	require.NoError(t, err)
	require.Empty(t, found, "no words, no passages")

	// Replacing a document replaces its passages; deleting removes them at once.
	doc, created, err := store.PutKnowledgeDoc(ctx, tx, ten.ID, "clinic.md", nil, "We are closed in August.")
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, 1, doc.Passages)
	found, err = store.SearchKnowledge(ctx, tx, ten.ID, "assistant", "parking", 3)
	require.NoError(t, err)
	require.Empty(t, found)
	require.NoError(t, store.DeleteKnowledgeDoc(ctx, tx, ten.ID, "clinic.md"))
	require.ErrorIs(t, store.DeleteKnowledgeDoc(ctx, tx, ten.ID, "clinic.md"), store.ErrNotFound)
	var n int
	require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM knowledge_passages p JOIN knowledge_docs d ON d.id = p.doc_id WHERE d.tenant_id = $1 AND d.name = 'clinic.md'`, ten.ID).Scan(&n))
	require.Zero(t, n)

	// Another language stems: "opens" finds "open" in english, not in simple.
	_, _, err = store.PutKnowledgeDoc(ctx, tx, ten.ID, "hours.md", nil, "The shop opens early.")
	require.NoError(t, err)
	found, err = store.SearchKnowledge(ctx, tx, ten.ID, "assistant", "when do you open", 3)
	require.NoError(t, err)
	require.Empty(t, found)
	require.NoError(t, store.SetKnowledgeLanguage(ctx, tx, ten.ID, "english"))
	found, err = store.SearchKnowledge(ctx, tx, ten.ID, "assistant", "when do you open", 3)
	require.NoError(t, err)
	require.Len(t, found, 1)
	require.ErrorIs(t, store.SetKnowledgeLanguage(ctx, tx, ten.ID, "klingon"), store.ErrUnknownLanguage)
}

// BenchmarkKnowledgeSearch measures a turn's retrieval at 10, 1,000 and
// 100,000 passages, and logs the plan: the GIN index, not a scan.
func BenchmarkKnowledgeSearch(b *testing.B) {
	ctx := context.Background()
	words := strings.Fields("tooth cleaning invoice parking monday friday price crown filling xray child insurance " +
		"emergency whitening brace implant root canal appointment cancel refund card cash holiday august")
	for _, n := range []int{10, 1000, 100000} {
		b.Run(fmt.Sprintf("passages=%d", n), func(b *testing.B) {
			tx := testdb.Tx(b)
			ten := testdb.NewTenant(b, tx, 0)
			doc, _, err := store.PutKnowledgeDoc(ctx, tx, ten.ID, "big.md", nil, "seed")
			if err != nil {
				b.Fatal(err)
			}
			// n real passages (SplitPassages would gather short lines into fewer).
			_, err = tx.Exec(ctx, `
				INSERT INTO knowledge_passages (tenant_id, doc_id, ord, body, language)
				SELECT $1, $2, i, format('Passage %s about %s and %s, number%s.', i,
				       ($3::text[])[1 + i % cardinality($3::text[])], ($3::text[])[1 + (i * 7) % cardinality($3::text[])], i), 'simple'
				FROM generate_series(1, $4::int) AS i`, ten.ID, doc.ID, words, n)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `ANALYZE knowledge_passages`); err != nil {
				b.Fatal(err)
			}
			const q = "how much is a crown, and do you take insurance number42?"
			rows, err := tx.Query(ctx, "EXPLAIN "+store.SearchKnowledgeSQL(), ten.ID, "assistant", q, 3, 1000)
			if err != nil {
				b.Fatal(err)
			}
			for rows.Next() {
				var line string
				_ = rows.Scan(&line)
				b.Log(line)
			}
			rows.Close()
			b.ResetTimer()
			for b.Loop() {
				if _, err := store.SearchKnowledge(ctx, tx, ten.ID, "assistant", q, 3); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Erasing a contact blanks its turns' tool call arguments and answers.
func TestErasureBlanksToolCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	ten, res := conversation(t, tx, 1)
	_, err := store.RecordToolRound(ctx, tx, ten.ID, res.MessageID, []store.ToolCall{{Round: 1, Index: 0, CallID: "c1",
		Name: "book", Arguments: `{"message": "my name is Ana"}`, IdempotencyKey: "k"}})
	require.NoError(t, err)
	require.NoError(t, store.RecordToolResult(ctx, tx, ten.ID, res.MessageID, store.ToolResult{Round: 1, Index: 0,
		Outcome: store.ToolOK, HTTPStatus: 200, Result: `{"reply": "Booked for Ana"}`}, store.Event{Kind: "turn.tool"}))
	var address string
	require.NoError(t, tx.QueryRow(ctx, `SELECT address FROM contacts WHERE id = $1`, res.ContactID).Scan(&address))
	_, err = store.EraseContacts(ctx, tx, memory(t, nil), ten.ID, []string{address})
	require.NoError(t, err)
	calls, err := store.TurnToolCalls(ctx, tx, ten.ID, res.MessageID)
	require.NoError(t, err)
	require.Len(t, calls, 1)
	require.Equal(t, "{}", calls[0].Arguments)
	require.Equal(t, "{}", *calls[0].Result)
}

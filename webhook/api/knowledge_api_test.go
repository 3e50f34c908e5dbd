package api_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

func TestAPIHTTPToolsValidated(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)
	key := edgetest.Bearer(ten.APIKey)
	path := "/api/v1/tenants/" + ten.ID + "/agents/assistant"
	tool := func(name, url, params string) string {
		return `{"name": "` + name + `", "description": "d", "url": "` + url + `", "parameters": ` + params + `}`
	}
	ok := tool("book", "https://tools.example.com/book", `{"type": "object", "properties": {"day": {"type": "string"}}}`)
	many := make([]string, 17)
	for i := range many {
		many[i] = tool("t"+strings.Repeat("x", i+1), "https://tools.example.com/t", `{}`)
	}
	bad := []struct{ body, want string }{
		{`{"http_tools": [` + tool("book", "ftp://tools.example.com/book", `{}`) + `]}`, "http_tools[0].url"},
		{`{"http_tools": [` + tool("book", "https://tools.example.com/book", `[1, 2]`) + `]}`, "http_tools[0].parameters"},
		{`{"http_tools": [` + tool("book", "https://tools.example.com/book", `{"type": "string"}`) + `]}`, "http_tools[0].parameters"},
		{`{"http_tools": [` + ok + `, ` + ok + `]}`, "http_tools[1].name"},
		{`{"http_tools": [` + tool("handoff_to_human", "https://tools.example.com/h", `{}`) + `]}`, "http_tools[0].name"},
		{`{"http_tools": [` + strings.Join(many, ",") + `]}`, "at most 16"},
		{`{"http_tools": [` + tool("book", "http://127.0.0.1:9/book", `{}`) + `]}`, "TOOLS_ALLOW_PRIVATE"},
		{`{"http_tools": [` + tool("book", "http://10.1.2.3/book", `{}`) + `]}`, "http_tools[0].url"},
	}
	for _, b := range bad {
		e := call[apiError](t, o, "PUT", path, key, b.body, 400)
		require.Contains(t, e.Error.Message, b.want, b.body)
	}
	var n int
	require.NoError(t, testdb.Pool(t).QueryRow(t.Context(), `SELECT count(*) FROM agents WHERE tenant_id = $1 AND http_tools <> '[]'`, ten.ID).Scan(&n))
	require.Zero(t, n, "a refused agent writes nothing")

	got := call[struct {
		HTTPTools []struct {
			Name       string         `json:"name"`
			URL        string         `json:"url"`
			Parameters map[string]any `json:"parameters"`
		} `json:"http_tools"`
	}](t, o, "PUT", path, key, `{"http_tools": [`+ok+`]}`, 200)
	require.Len(t, got.HTTPTools, 1)
	require.Equal(t, "book", got.HTTPTools[0].Name)
	require.Equal(t, "object", got.HTTPTools[0].Parameters["type"])
}

func TestAPIKnowledgeLifecycle(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)
	other := testdb.NewTenant(t, testdb.Pool(t), 0)
	key := edgetest.Bearer(ten.APIKey)
	base := "/api/v1/tenants/" + ten.ID + "/knowledge"

	type doc struct {
		Name     string   `json:"name"`
		Agents   []string `json:"agents"`
		Passages int      `json:"passages"`
	}
	d := call[doc](t, o, "PUT", base+"/faq.md", key, `{"text": "# Hours\n\nWe open at 9.\n\n# Parking\n\nBehind the building."}`, 201)
	require.Equal(t, 2, d.Passages)
	require.Empty(t, d.Agents)
	d = call[doc](t, o, "PUT", base+"/faq.md", key, `{"text": "We open at 10.", "agents": ["sales"]}`, 200)
	require.Equal(t, 1, d.Passages)

	list := call[struct {
		Items    []doc  `json:"items"`
		Language string `json:"language"`
	}](t, o, "GET", base, key, nil, 200)
	require.Equal(t, "simple", list.Language)
	require.Len(t, list.Items, 1)
	require.Equal(t, []string{"sales"}, list.Items[0].Agents)

	call[apiError](t, o, "PUT", base+"/faq.md", key, `{"text": "  "}`, 400)
	call[apiError](t, o, "PUT", base+"/..bad", key, `{"text": "x"}`, 400)
	call[apiError](t, o, "PUT", base+"/faq.md", key, `{"text": "x", "agents": ["Not An Agent"]}`, 400)
	big := strings.Repeat("a", (1<<20)+1)
	e := call[apiError](t, o, "PUT", base+"/big.md", key, `{"text": "`+big+`"}`, 400)
	require.Contains(t, e.Error.Message, "1 MiB")
	call[apiError](t, o, "PUT", base, key, `{"language": "klingon"}`, 400)
	call[map[string]any](t, o, "PUT", base, key, `{"language": "english"}`, 200)

	// Another tenant's key sees nothing of it.
	call[apiError](t, o, "GET", base, edgetest.Bearer(other.APIKey), nil, 404)
	call[apiError](t, o, "DELETE", base+"/faq.md", edgetest.Bearer(other.APIKey), nil, 404)

	rec := o.Do(t, "DELETE", base+"/faq.md", key, nil)
	require.Equal(t, 204, rec.Code)
	call[apiError](t, o, "DELETE", base+"/faq.md", key, nil, 404)
	var n int
	require.NoError(t, testdb.Pool(t).QueryRow(t.Context(), `SELECT count(*) FROM knowledge_passages WHERE tenant_id = $1`, ten.ID).Scan(&n))
	require.Zero(t, n, "deleting a document removes its passages at once")
}

package api

import (
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

// The knowledge base API (docs/tools.md): a tenant's documents, split into
// passages the turns search.

// MaxKnowledgeBytes is the largest document text (1 MiB); the request may
// be a little larger for its JSON around it.
const MaxKnowledgeBytes = 1 << 20

var (
	docNameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	languageRE = regexp.MustCompile(`^[a-z_]{1,63}$`)
)

// PutKnowledge handles PUT /api/v1/tenants/:id/knowledge/:doc: it creates
// or replaces a document and its passages (201 when created, 200 otherwise).
func (s *Server) PutKnowledge(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	var req struct {
		Text   *string  `json:"text"`
		Agents []string `json:"agents"`
	}
	if err := decodeJSONUpTo(c, &req, MaxKnowledgeBytes+edge.MaxBodyBytes); err != nil {
		s.apiError(c, err)
		return
	}
	name := c.Param("doc")
	if !docNameRE.MatchString(name) {
		s.apiError(c, invalid("document name must be 1-128 of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit"))
		return
	}
	if req.Text == nil || strings.TrimSpace(*req.Text) == "" {
		s.apiError(c, invalid("text is required"))
		return
	}
	text := strings.ToValidUTF8(strings.ReplaceAll(*req.Text, "\x00", ""), "")
	if len(text) > MaxKnowledgeBytes {
		s.apiError(c, invalid("text is over 1 MiB"))
		return
	}
	if len(req.Agents) > 100 {
		s.apiError(c, invalid("agents lists at most 100 agents"))
		return
	}
	for i, a := range req.Agents {
		if !agentNameRE.MatchString(a) {
			s.apiError(c, invalid("agents[%d] is not an agent name", i))
			return
		}
	}
	doc, created, err := store.PutKnowledgeDoc(c.Request.Context(), s.DB, tenantID, name, req.Agents, text)
	if err != nil {
		s.apiError(c, err)
		return
	}
	putAnswer(c, created, doc)
}

// ListKnowledge handles GET /api/v1/tenants/:id/knowledge: the documents,
// oldest first, and the knowledge base's language.
func (s *Server) ListKnowledge(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	limit, after, err := readPage(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	ctx := c.Request.Context()
	lang, err := store.KnowledgeLanguage(ctx, s.DB, tenantID)
	if err != nil {
		s.apiError(c, err)
		return
	}
	docs, err := store.ListKnowledgeDocs(ctx, s.DB, tenantID, after, limit)
	if err != nil {
		s.apiError(c, err)
		return
	}
	var next *string
	if len(docs) > limit {
		docs = docs[:limit]
		cur := encodeCursor(docs[limit-1].ID)
		next = &cur
	}
	if docs == nil {
		docs = []store.KnowledgeDoc{}
	}
	c.JSON(http.StatusOK, gin.H{"items": docs, "next_cursor": next, "language": lang})
}

// DeleteKnowledge handles DELETE /api/v1/tenants/:id/knowledge/:doc: the
// document and its passages are gone when it answers 204.
func (s *Server) DeleteKnowledge(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	if err := store.DeleteKnowledgeDoc(c.Request.Context(), s.DB, tenantID, c.Param("doc")); err != nil {
		s.apiError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// PutKnowledgeSettings handles PUT /api/v1/tenants/:id/knowledge
// {"language": "english"}: the text search configuration documents and
// customers' messages are parsed with ("simple" by default); the passages
// are reindexed in it.
func (s *Server) PutKnowledgeSettings(c *gin.Context) {
	tenantID, err := tenantParam(c)
	if err != nil {
		s.apiError(c, err)
		return
	}
	var req struct {
		Language string `json:"language"`
	}
	if err := decodeJSON(c, &req); err != nil {
		s.apiError(c, err)
		return
	}
	lang := strings.ToLower(strings.TrimSpace(req.Language))
	if !languageRE.MatchString(lang) {
		s.apiError(c, invalid(`language must name a text search configuration, e.g. "simple", "english", "portuguese"`))
		return
	}
	err = store.SetKnowledgeLanguage(c.Request.Context(), s.DB, tenantID, lang)
	if errors.Is(err, store.ErrUnknownLanguage) {
		s.apiError(c, invalid("language %q is not a text search configuration this database has", lang))
		return
	}
	if err != nil {
		s.apiError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"language": lang})
}

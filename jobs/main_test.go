package jobs_test

import (
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/internal/testdb"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode) // the end-to-end tests serve the webhook
	testdb.Run(m)
}

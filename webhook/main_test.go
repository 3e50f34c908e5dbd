package webhook_test

import (
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/conversa/conversa/internal/testdb"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	testdb.Run(m)
}

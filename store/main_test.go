package store_test

import (
	"testing"

	"github.com/conversa/conversa/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Run(m) }

package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A DATABASE_URL that sizes its pool wins over the process default, so a
// serve and several work processes fit under Postgres's max_connections
// (the chaos harness runs three processes; at 80 connections each they can
// exceed a 100-connection server).
func TestPoolConfigHonoursPoolMaxConns(t *testing.T) {
	t.Parallel()
	cfg, err := poolConfig("postgres://u@127.0.0.1:5432/db?sslmode=disable&pool_max_conns=7", 80)
	require.NoError(t, err)
	require.EqualValues(t, 7, cfg.MaxConns)

	cfg, err = poolConfig("postgres://u@127.0.0.1:5432/db?sslmode=disable", 80)
	require.NoError(t, err)
	require.EqualValues(t, 80, cfg.MaxConns)
}

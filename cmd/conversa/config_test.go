package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func lookup(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestLLMSettingsDefaultAndValidate(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(lookup(nil))
	require.NoError(t, err)
	require.Equal(t, 256, c.LLMConcurrency)
	require.Equal(t, 60*time.Second, c.LLMTimeout)
	require.Equal(t, 15*time.Minute, c.LLMGiveUp)

	c, err = loadConfig(lookup(map[string]string{"LLM_CONCURRENCY": "1000", "LLM_TIMEOUT": "120s", "LLM_GIVE_UP": "2m"}))
	require.NoError(t, err)
	require.Equal(t, 1000, c.LLMConcurrency)
	require.Equal(t, 120*time.Second, c.LLMTimeout)

	for _, tc := range []struct {
		vars map[string]string
		bad  []string
	}{
		{map[string]string{"LLM_CONCURRENCY": "0"}, []string{"LLM_CONCURRENCY"}},
		{map[string]string{"LLM_CONCURRENCY": "-4"}, []string{"LLM_CONCURRENCY"}},
		{map[string]string{"LLM_CONCURRENCY": "many"}, []string{"LLM_CONCURRENCY"}},
		{map[string]string{"LLM_TIMEOUT": "0s"}, []string{"LLM_TIMEOUT"}},
		{map[string]string{"LLM_TIMEOUT": "1h"}, []string{"LLM_TIMEOUT"}},
		{map[string]string{"LLM_TIMEOUT": "soon"}, []string{"LLM_TIMEOUT"}},
		{map[string]string{"LLM_TIMEOUT": "90s", "LLM_GIVE_UP": "30s"}, []string{"LLM_GIVE_UP"}},
		{map[string]string{"LLM_GIVE_UP": "0"}, []string{"LLM_GIVE_UP"}},
		// Every bad variable at once, with the others already checked.
		{map[string]string{"LLM_CONCURRENCY": "0", "LLM_TIMEOUT": "20m", "LLM_PROVIDER": "magic"}, []string{"LLM_CONCURRENCY", "LLM_TIMEOUT", "LLM_PROVIDER"}},
	} {
		_, err := loadConfig(lookup(tc.vars))
		require.Error(t, err, tc.vars)
		for _, name := range tc.bad {
			require.Contains(t, err.Error(), name+":", tc.vars)
		}
		require.Equal(t, len(tc.bad), strings.Count(err.Error(), "\n")+1, "one error per bad variable: %v", err)
	}
}

package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/conversa/conversa/store"
)

// config is everything the process reads from its environment (README.md, "Configuration").
type config struct {
	DatabaseURL    string
	RedisURL       string
	HTTPAddr       string
	WorkerHTTPAddr string
	PublicBaseURL  string
	TwilioAPIURL   string
	TwilioTimeout  time.Duration
	LLMProvider    string
	OpenAIBaseURL  string
	OpenAIAPIKey   string
	LLMModel       string
	// LLMConcurrency, LLMTimeout and LLMGiveUp: see README, "A real LLM".
	LLMConcurrency int
	LLMTimeout     time.Duration
	LLMGiveUp      time.Duration
	AdminToken     string
	// AdminTokenGenerated is true when ADMIN_TOKEN was unset and one was made up.
	AdminTokenGenerated bool
	// SecretKeys seal Twilio tokens: the first seals, all open (rotation).
	SecretKeys [][]byte
	// SecretKeyDefault is true when SECRET_KEY was unset (the dev key).
	SecretKeyDefault bool
	Debounce         time.Duration
	// ReconcileAfter is how long an accepted reply may go without a final
	// status before it is looked up at Twilio.
	ReconcileAfter time.Duration
	LogFormat      string
	// TranscribeModel is TRANSCRIBE_MODEL ("" = voice notes are not transcribed).
	TranscribeModel   string
	MediaMaxBytes     int64
	ToolsAllowPrivate bool
}

// Bounds of the LLM settings: past them a setting is a typo, not a choice.
const (
	maxLLMConcurrency = 10000
	maxLLMTimeout     = 10 * time.Minute
)

// devSecretKey is the well-known development key used when SECRET_KEY is unset.
const devSecretKey = "636f6e76657273612d6465762d6b65792d6e6f742d7365637265742d21212121"

// loadConfig reads the environment (os.LookupEnv in production) and reports
// every bad variable at once.
func loadConfig(lookupEnv func(string) (string, bool)) (config, error) {
	var errs []error
	get := func(name, def string) string {
		if v, _ := lookupEnv(name); strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
		return def
	}
	badDur := map[string]bool{}
	dur := func(name, def string) time.Duration {
		v := get(name, def)
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration like 1500ms", name, v))
			badDur[name] = true
		}
		return d
	}
	urlVar := func(name, v string, schemes ...string) {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || !contains(schemes, u.Scheme) {
			errs = append(errs, fmt.Errorf("%s: %q is not a %s URL", name, v, strings.Join(schemes, "/")))
		}
	}

	c := config{
		DatabaseURL:    get("DATABASE_URL", "postgres://localhost:5432/conversa?sslmode=disable"),
		HTTPAddr:       get("HTTP_ADDR", ":8080"),
		WorkerHTTPAddr: get("WORKER_HTTP_ADDR", ":8081"),
		PublicBaseURL:  strings.TrimRight(get("PUBLIC_BASE_URL", "http://localhost:8080"), "/"),
		TwilioAPIURL:   strings.TrimRight(get("TWILIO_API_URL", "https://api.twilio.com"), "/"),
		TwilioTimeout:  dur("TWILIO_TIMEOUT", "10s"),
		LLMProvider:    get("LLM_PROVIDER", "offline"),
		OpenAIBaseURL:  get("OPENAI_BASE_URL", ""),
		OpenAIAPIKey:   get("OPENAI_API_KEY", ""),
		LLMModel:       get("LLM_MODEL", ""),
		LLMTimeout:     dur("LLM_TIMEOUT", "60s"),
		LLMGiveUp:      dur("LLM_GIVE_UP", "15m"),
		AdminToken:     get("ADMIN_TOKEN", ""),
		Debounce:       dur("DEBOUNCE", "1500ms"),
		ReconcileAfter: dur("RECONCILE_AFTER", "10m"),
		LogFormat:      get("LOG_FORMAT", ""),
	}
	// REDIS_URL set to the empty string means "no Redis"; unset means the default.
	c.RedisURL = "redis://127.0.0.1:6379/0"
	if v, set := lookupEnv("REDIS_URL"); set {
		c.RedisURL = strings.TrimSpace(v)
	}

	if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
		errs = append(errs, fmt.Errorf("DATABASE_URL: %v", err))
	}
	if c.RedisURL != "" {
		urlVar("REDIS_URL", c.RedisURL, "redis", "rediss")
	}
	urlVar("PUBLIC_BASE_URL", c.PublicBaseURL, "http", "https")
	if c.TwilioAPIURL != "sandbox" {
		urlVar("TWILIO_API_URL", c.TwilioAPIURL, "http", "https")
	}
	if c.TwilioTimeout == 0 {
		errs = append(errs, errors.New("TWILIO_TIMEOUT: must be above zero"))
	}
	if c.TwilioTimeout >= 14*time.Second {
		// A send must give up before River's 15 s job timeout cancels it.
		errs = append(errs, errors.New("TWILIO_TIMEOUT: must be below 14s (the send job times out at 15s)"))
	}
	switch c.LLMProvider {
	case "offline":
	case "openai":
		if c.OpenAIBaseURL != "" {
			urlVar("OPENAI_BASE_URL", c.OpenAIBaseURL, "http", "https")
		}
		if c.LLMModel == "" {
			errs = append(errs, errors.New("LLM_MODEL: required with LLM_PROVIDER=openai"))
		}
	default:
		errs = append(errs, fmt.Errorf("LLM_PROVIDER: %q is not offline or openai", c.LLMProvider))
	}
	concurrency := get("LLM_CONCURRENCY", "256")
	n, err := strconv.Atoi(concurrency)
	if err != nil || n <= 0 || n > maxLLMConcurrency {
		errs = append(errs, fmt.Errorf("LLM_CONCURRENCY: %q is not a whole number from 1 to %d", concurrency, maxLLMConcurrency))
	}
	c.LLMConcurrency = n
	timeoutOK := c.LLMTimeout >= time.Second && c.LLMTimeout <= maxLLMTimeout
	if !timeoutOK && !badDur["LLM_TIMEOUT"] {
		// The turn job's timeout and stuck-job rescue follow from it
		// (jobs.TurnTimeout): too short cuts every answer, too long leaves a
		// crashed turn unanswered for as long.
		errs = append(errs, fmt.Errorf("LLM_TIMEOUT: %s must be from 1s to %s (the turn job's timeout and stuck-job rescue follow from it)", c.LLMTimeout, maxLLMTimeout))
	}
	if timeoutOK && !badDur["LLM_GIVE_UP"] && c.LLMGiveUp < c.LLMTimeout {
		errs = append(errs, fmt.Errorf("LLM_GIVE_UP: %s is shorter than LLM_TIMEOUT (%s): the bot would give up before one call could answer", c.LLMGiveUp, c.LLMTimeout))
	}
	c.TranscribeModel, c.MediaMaxBytes, c.ToolsAllowPrivate = mediaConfig(get, c.LLMProvider, &errs)
	if _, err := time.ParseDuration(get("RECONCILE_AFTER", "10m")); err == nil && c.ReconcileAfter < 2*time.Second {
		errs = append(errs, errors.New("RECONCILE_AFTER: must be at least 2s"))
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("LOG_FORMAT: %q is not text or json", c.LogFormat))
	}
	if c.AdminToken == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		c.AdminToken, c.AdminTokenGenerated = hex.EncodeToString(b), true
	}
	// SECRET_KEY, then SECRET_KEY_OLD: the old key still opens what it sealed.
	for i, name := range []string{"SECRET_KEY", "SECRET_KEY_OLD"} {
		v := get(name, "")
		if v == "" {
			if i == 0 {
				v, c.SecretKeyDefault = devSecretKey, true
			} else {
				continue
			}
		}
		k, err := store.ParseKey(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", name, err))
			continue
		}
		c.SecretKeys = append(c.SecretKeys, k)
	}
	return c, errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/conversa/conversa/internal/twilio/signature"
	"github.com/conversa/conversa/store"
)

type demoCmd struct {
	Body    string        `default:"Hi! What are your opening hours?" help:"What the demo customer writes."`
	Timeout time.Duration `default:"45s" help:"How long to wait for the reply to be delivered."`
	Voice   bool          `help:"Send a voice note (the sandbox's sample) instead of text: the server fetches it from the sandbox Twilio and transcribes it when TRANSCRIBE_MODEL is set."`
	Tool    string        `help:"URL of an appointment endpoint: the demo agent gets it as the HTTP tool book_appointment (the offline agent calls it when the customer writes book or appointment). See docs/tools.md."`
	Doc     string        `help:"A markdown or text file put in the demo tenant's knowledge base as demo.md." type:"existingfile"`
}

// Run creates a demo tenant on the sandbox Twilio, sends a signed inbound
// WhatsApp message to the running server, and follows its reply to delivery
// through the tenant's own API key.
func (d *demoCmd) Run(ctx context.Context, a *app) error {
	base := a.demoBaseURL()
	hc := &http.Client{Timeout: 10 * time.Second}
	fmt.Fprintf(a.stdout, "Conversa demo against %s\n", base)
	if err := demoReady(ctx, hc, base); err != nil {
		return err
	}

	pool, err := a.openPool(ctx, false, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	sealer, err := store.NewSealer(a.cfg.SecretKeys...)
	if err != nil {
		return err
	}
	tenant, keys, err := store.CreateTenant(ctx, pool, sealer, "Demo "+time.Now().Format("2006-01-02 15:04:05"))
	if err != nil {
		return err
	}
	// twilio-go accepts only letters and digits in credentials.
	sid, token, number := "AC"+randHex(16), randHex(16), "whatsapp:"+randPhone("+1415")
	if _, err := a.addAccount(ctx, pool, tenant.ID, sid, token, []string{number}); err != nil {
		return err
	}
	if _, err := store.AddCredits(ctx, pool, tenant.ID, 10); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "✓ demo tenant %s with 10 credits and sandbox number %s\n", tenant.ID, number)

	api := demoAPI{hc: hc, base: base + "/api/v1", key: keys.APIKey}
	if err := d.setUpAgent(ctx, a, api, tenant.ID, keys.SigningSecret); err != nil {
		return err
	}

	customer := randPhone("+1555")
	messageSID := "SM" + randHex(16)
	form := url.Values{
		"MessageSid": {messageSID}, "SmsMessageSid": {messageSID}, "AccountSid": {sid},
		"From": {"whatsapp:" + customer}, "To": {number}, "Body": {d.Body},
		"NumMedia": {"0"}, "ProfileName": {"Demo Customer"}, "WaId": {strings.TrimPrefix(customer, "+")},
	}
	if d.Voice {
		addDemoVoiceNote(form, sid, messageSID)
	}
	inboundURL := base + "/twilio/inbound"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, inboundURL, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", signature.Sign(token, inboundURL, form))
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("post inbound: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("post inbound: server answered %s", resp.Status)
	}
	if d.Voice {
		fmt.Fprintf(a.stdout, "✓ customer sent a voice note (signed webhook accepted: %s)\n", resp.Status)
	} else {
		fmt.Fprintf(a.stdout, "✓ customer wrote %q (signed webhook accepted: %s)\n", d.Body, resp.Status)
	}

	reply, err := api.waitForDelivery(ctx, a.stdout, messageSID, d.Timeout)
	if err != nil {
		return err
	}
	if d.Voice {
		fmt.Fprintf(a.stdout, "\nHeard:   %s\n", api.heard(ctx, messageSID))
	}
	fmt.Fprintf(a.stdout, "\nReply:   %q\nStatus:  %s\n", reply.Body, reply.Status)
	fmt.Fprintf(a.stdout, "Trace:   curl -H 'Authorization: Bearer %s' %s/api/v1/messages/%d/trace\n", keys.APIKey, base, reply.ID)
	fmt.Fprintf(a.stdout, "Jobs:    %s/riverui/ (user admin, password: the server's ADMIN_TOKEN)\n", base)
	fmt.Fprintf(a.stdout, "\nConsole: %s/console/\nAPI key: %s\n  (sign in with it to read the conversation, take it over and answer the demo customer yourself)\n", base, keys.APIKey)
	if reply.Status == store.StatusFailed || reply.Status == store.StatusUndelivered {
		return fmt.Errorf("the reply was not delivered: %s (%s)", reply.Status, deref(reply.ErrorReason))
	}
	return nil
}

// setUpAgent gives the demo tenant's agent the --tool endpoint and puts
// the --doc file in its knowledge base, through the tenant's API.
func (d *demoCmd) setUpAgent(ctx context.Context, a *app, api demoAPI, tenantID, signingSecret string) error {
	if d.Tool != "" {
		agent := map[string]any{"http_tools": []any{map[string]any{
			"name": "book_appointment", "description": "Book the first free appointment slot for the customer.",
			"url": d.Tool, "keywords": []string{"book", "appointment"},
			"parameters": map[string]any{"type": "object", "properties": map[string]any{
				"message": map[string]any{"type": "string", "description": "What the customer asked for."}}},
		}}}
		if err := api.put(ctx, "/tenants/"+tenantID+"/agents/assistant", agent); err != nil {
			return fmt.Errorf("set up the tool: %w", err)
		}
		fmt.Fprintf(a.stdout, "✓ agent has the HTTP tool book_appointment -> %s (signing secret %s)\n", d.Tool, signingSecret)
	}
	if d.Doc != "" {
		text, err := os.ReadFile(d.Doc)
		if err != nil {
			return err
		}
		if err := api.put(ctx, "/tenants/"+tenantID+"/knowledge/demo.md", map[string]any{"text": string(text)}); err != nil {
			return fmt.Errorf("set up the knowledge base: %w", err)
		}
		fmt.Fprintf(a.stdout, "✓ %s is in the knowledge base as demo.md\n", d.Doc)
	}
	return nil
}

// put sends a JSON PUT with the tenant's key; any non-2xx is an error.
func (api demoAPI) put(ctx context.Context, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, api.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+api.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := api.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("PUT %s: %s: %s", path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// demoBaseURL is where the running server is: PUBLIC_BASE_URL if set, else
// HTTP_ADDR on localhost.
func (a *app) demoBaseURL() string {
	if v, ok := a.lookupEnv("PUBLIC_BASE_URL"); ok && strings.TrimSpace(v) != "" {
		return a.cfg.PublicBaseURL
	}
	_, port, err := net.SplitHostPort(a.cfg.HTTPAddr)
	if err != nil || port == "" {
		port = "8080"
	}
	return "http://localhost:" + port
}

func demoReady(ctx context.Context, hc *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("no Conversa server answers at %s (start one with `make run`): %w", base, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the server at %s is not ready: %s", base, resp.Status)
	}
	return nil
}

// demoAPI reads the demo tenant's data through the operator API.
type demoAPI struct {
	hc   *http.Client
	base string
	key  string
}

func (api demoAPI) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+api.key)
	resp, err := api.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// waitForDelivery follows the inbound message to its reply's final status,
// printing the trace's events as they happen, so a reply that is slow (or
// stuck: say the server is not on the sandbox Twilio) shows why.
func (api demoAPI) waitForDelivery(ctx context.Context, out io.Writer, messageSID string, timeout time.Duration) (store.Message, error) {
	deadline := time.Now().Add(timeout)
	var inbound *store.Message
	printed := 0
	last := store.Message{}
	for time.Now().Before(deadline) {
		if inbound == nil {
			var found struct {
				Items []store.Message `json:"items"`
			}
			if err := api.get(ctx, "/messages?twilio_sid="+url.QueryEscape(messageSID), &found); err == nil && len(found.Items) > 0 {
				inbound = &found.Items[0]
			}
		}
		if inbound != nil {
			var trace struct {
				Events []struct {
					Kind   string         `json:"kind"`
					Detail map[string]any `json:"detail"`
				} `json:"events"`
			}
			if err := api.get(ctx, fmt.Sprintf("/messages/%d/trace", inbound.ID), &trace); err == nil {
				for _, e := range trace.Events[min(printed, len(trace.Events)):] {
					fmt.Fprintf(out, "  · %s%s\n", e.Kind, eventSummary(e.Detail))
				}
				printed = max(printed, len(trace.Events))
			}
			var msgs struct {
				Items []store.Message `json:"items"`
			}
			if err := api.get(ctx, fmt.Sprintf("/conversations/%d/messages", inbound.ConversationID), &msgs); err == nil {
				for _, m := range msgs.Items {
					if m.Direction != store.DirectionOutbound {
						continue
					}
					last = m
					switch m.Status {
					case store.StatusDelivered, store.StatusRead, store.StatusFailed, store.StatusUndelivered:
						return m, nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return store.Message{}, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	if last.ID == 0 {
		return store.Message{}, errors.New("no reply within the timeout: look at the server's log and /riverui/")
	}
	return store.Message{}, fmt.Errorf("the reply was still %s after %s (is the server on the sandbox Twilio? `make run` sets TWILIO_API_URL=sandbox)", last.Status, timeout)
}

// eventSummary picks the telling fields of a trace event's detail.
func eventSummary(d map[string]any) string {
	var parts []string
	for _, k := range []string{"agent", "reason", "status", "class", "error_code", "attempt", "content_type", "bytes", "model", "duration_s"} {
		if v, ok := d[k]; ok && v != nil && v != "" {
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randPhone(prefix string) string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1e7))
	return fmt.Sprintf("%s%07d", prefix, n.Int64())
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

package console

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/conversa/conversa/store"
)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"contact":  contactLabel,
	"last4":    last4,
	"author":   authorLabel,
	"when":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") + " UTC" },
	"whenp":    func(t *time.Time) string { return whenPtr(t) },
	"deref":    func(s *string) string { return derefString(s) },
	"describe": describe,
	"detail":   func(raw json.RawMessage) string { return string(raw) },
	"excerpt":  excerpt,
}

func queryEscape(s string) string { return url.QueryEscape(s) }

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func whenPtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04") + " UTC"
}

// last4 is the end of an address's number: enough to tell customers apart
// on a shared screen.
func last4(address string) string {
	n := strings.TrimPrefix(address, "whatsapp:")
	if len(n) <= 4 {
		return n
	}
	return "…" + n[len(n)-4:]
}

// contactLabel is the customer's profile name and the last digits of their number.
func contactLabel(v store.ConversationView) string {
	if v.ContactName != nil && strings.TrimSpace(*v.ContactName) != "" {
		return *v.ContactName + " (" + last4(v.ContactAddress) + ")"
	}
	return last4(v.ContactAddress)
}

// authorLabel names who wrote a message: the customer, the bot (and which
// agent), or a person.
func authorLabel(m store.Message) string {
	switch m.Author {
	case store.AuthorContact:
		return "Customer"
	case store.AuthorHuman:
		return "Person"
	case store.AuthorBot:
		if m.Agent != nil && *m.Agent != "" {
			return "Bot (" + *m.Agent + ")"
		}
		return "Bot"
	}
	return string(m.Author)
}

func excerpt(s *string) string {
	if s == nil {
		return ""
	}
	r := []rune(*s)
	if len(r) > 80 {
		return string(r[:79]) + "…"
	}
	return *s
}

// describe says what a trace event means, in words. The raw detail is shown
// beside it, so an event kind this does not know still reads.
func describe(e store.TraceEvent) string {
	var d map[string]any
	_ = json.Unmarshal(e.Detail, &d)
	s := func(k string) string {
		if v, ok := d[k]; ok && v != nil {
			return fmt.Sprint(v)
		}
		return ""
	}
	switch e.Kind {
	case "webhook.received":
		return "Twilio delivered the customer's message to the webhook"
	case "message.created":
		return "Written by a person (via " + orDefault(s("via"), "api") + ")"
	case "turn.routed":
		out := "Agent " + s("agent") + " chosen by " + orDefault(s("by"), "rules")
		if r := s("reason"); r != "" {
			out += ": " + r
		}
		return out
	case "turn.llm":
		return fmt.Sprintf("Model %s answered (%s prompt + %s completion tokens, %s ms)",
			orDefault(s("model"), s("provider")), s("prompt_tokens"), s("completion_tokens"), s("latency_ms"))
	case "turn.memory":
		return "Memory loaded from " + s("source")
	case "turn.reply", "turn.replied":
		return "Reply written"
	case "turn.skipped":
		return "No reply: " + s("reason")
	case "turn.no_credits":
		return "No AI reply: the tenant has no credits left"
	case "turn.handoff":
		return "The bot handed the conversation to a person"
	case "turn.failed", "turn.llm_failed":
		return "The turn failed: " + orDefault(s("reason"), s("error"))
	case "send.attempt":
		return "Sending to Twilio (attempt " + s("attempt") + ")"
	case "send.accepted":
		return "Twilio accepted (" + s("status") + ")"
	case "send.retry":
		return "Twilio asked us to retry later"
	case "send.ambiguous":
		return "Twilio did not answer in time: looking the message up before any resend"
	case "send.lookup":
		return "Looked the message up at Twilio"
	case "send.failed":
		return "Not sent: " + orDefault(s("reason"), "failed") + codeSuffix(s("error_code"))
	case "status.callback":
		return "Twilio reported " + s("status") + codeSuffix(s("error_code"))
	case "credits.refunded":
		return "Credit refunded"
	}
	return e.Kind
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func codeSuffix(code string) string {
	if code == "" || code == "0" {
		return ""
	}
	return " (error " + code + ")"
}

// chart is a bar chart drawn as SVG by the template: no script needed.
type chart struct {
	Width, Height int
	Bars          []bar
	Max           int64
}

type bar struct {
	X, Y, W, H int
	Label      string
	Count      int64
}

// barChart lays out one bar per day, scaled to the busiest day.
func barChart(days []store.DayCount) chart {
	c := chart{Width: 700, Height: 220}
	for _, d := range days {
		c.Max = max(c.Max, d.Count)
	}
	sort.Slice(days, func(i, j int) bool { return days[i].Day.Before(days[j].Day) })
	plot := c.Height - 40
	step := 0
	if len(days) > 0 {
		step = c.Width / len(days)
	}
	for i, d := range days {
		h := 0
		if c.Max > 0 {
			h = int(int64(plot) * d.Count / c.Max)
		}
		c.Bars = append(c.Bars, bar{
			X: i*step + 4, Y: 20 + plot - h, W: step - 8, H: h,
			Label: d.Day.Format("Jan 2"), Count: d.Count,
		})
	}
	return c
}

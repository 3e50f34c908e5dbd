package hook

import "strings"

// Twilio's default SMS opt-out and opt-in keywords, plus common localized
// ones. Twilio handles these itself on SMS; Conversa applies them on every
// channel (WhatsApp has no Twilio-side handling) before any agent runs.
var (
	optOutWords = []string{"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT",
		"PARAR", "BAJA", "ARRET", "ARRÊT", "STOPP", "DESCADASTRAR", "SAIR"}
	optInWords = []string{"START", "UNSTOP", "SUBSCRIBE", "OPTIN", "ALTA", "INICIAR"}
)

// optKeyword returns true for an opt-out, false for an opt-in, nil otherwise.
// Only a message that is the keyword alone counts ("stop!" yes, "don't stop" no).
func optKeyword(body string) *bool {
	w := strings.ToUpper(strings.Trim(strings.TrimSpace(body), ".!¡ "))
	for _, k := range optOutWords {
		if w == k {
			t := true
			return &t
		}
	}
	for _, k := range optInWords {
		if w == k {
			f := false
			return &f
		}
	}
	return nil
}

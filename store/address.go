package store

import "strings"

// E164 reports whether n is a phone number in E.164 form: "+" and 4 to 15
// digits. It is the one check of a number's form.
func E164(n string) bool {
	digits, ok := strings.CutPrefix(n, "+")
	return ok && len(digits) >= 4 && len(digits) <= 15 && strings.Trim(digits, "0123456789") == ""
}

// ValidNumber reports whether n is one of Twilio's number forms for a
// sender or a recipient: +E.164, or whatsapp:+E.164.
func ValidNumber(n string) bool {
	return E164(strings.TrimPrefix(n, string(ChannelWhatsApp)+":"))
}

package hook

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/edge"
)

// maxMedia is Twilio's limit of attachments on one message.
const maxMedia = 10

// decodeMedia reads NumMedia and its MediaUrlN / MediaContentTypeN. A count
// that disagrees with the URLs given is bad input: Twilio never sends one.
func decodeMedia(form url.Values) ([]store.Media, error) {
	n := 0
	if v := strings.TrimSpace(form.Get("NumMedia")); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 || n > maxMedia {
			return nil, fmt.Errorf("%w: NumMedia %q is not a number from 0 to %d", errBadRequest, v, maxMedia)
		}
	}
	for key := range form {
		rest, ok := strings.CutPrefix(key, "MediaUrl")
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(rest); err == nil && i >= n && form.Get(key) != "" {
			return nil, fmt.Errorf("%w: %s given but NumMedia is %d", errBadRequest, key, n)
		}
	}
	var out []store.Media
	for i := range n {
		u := edge.Clean(form.Get("MediaUrl" + strconv.Itoa(i)))
		if strings.TrimSpace(u) == "" {
			return nil, fmt.Errorf("%w: NumMedia is %d but MediaUrl%d is missing", errBadRequest, n, i)
		}
		out = append(out, store.Media{URL: u, ContentType: edge.Clean(form.Get("MediaContentType" + strconv.Itoa(i)))})
	}
	return out, nil
}

// checkMediaHosts refuses attachments anywhere but Twilio's hosts or
// TWILIO_API_URL's host name, even on a signed webhook: Conversa fetches
// them with the account's credentials (see media.Hosts).
func (s *Server) checkMediaHosts(list []store.Media) error {
	for i, m := range list {
		if err := s.MediaHosts.Check(m.URL); err != nil {
			return fmt.Errorf("%w: MediaUrl%d: %v", errBadRequest, i, err)
		}
	}
	return nil
}

package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Sealer encrypts secrets at rest (Twilio auth tokens) with AES-256-GCM.
// It seals with its first key and opens with any, so a key can be rotated by
// putting the new key first and the old one second until every row is
// re-sealed.
type Sealer struct {
	aeads []cipher.AEAD
}

// ParseKey decodes a 32-byte key given as 64 hex characters or base64.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("must be 32 bytes as 64 hex characters or base64")
}

// NewSealer builds a Sealer from one or more 32-byte keys, newest first.
func NewSealer(keys ...[]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("sealer: no key")
	}
	s := &Sealer{}
	for _, k := range keys {
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("sealer: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("sealer: %w", err)
		}
		s.aeads = append(s.aeads, aead)
	}
	return s, nil
}

// Seal encrypts plaintext as nonce || ciphertext under the first key.
func (s *Sealer) Seal(plaintext string) ([]byte, error) {
	aead := s.aeads[0]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return aead.Seal(nonce, nonce, []byte(plaintext), nil), nil
}

// Open decrypts what Seal produced, trying each key in turn.
func (s *Sealer) Open(sealed []byte) (string, error) {
	for _, aead := range s.aeads {
		n := aead.NonceSize()
		if len(sealed) < n {
			break
		}
		if pt, err := aead.Open(nil, sealed[:n], sealed[n:], nil); err == nil {
			return string(pt), nil
		}
	}
	return "", errors.New("open sealed secret: no key fits")
}

// HashAPIKey is how tenant API keys are stored and looked up.
func HashAPIKey(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// newAPIKey returns a fresh random tenant API key.
func newAPIKey() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new api key: %w", err)
	}
	return "cvk_" + base64.RawURLEncoding.EncodeToString(b), nil
}

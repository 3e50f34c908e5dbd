package testdb

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"testing"

	"github.com/conversa/conversa/store"
)

// TestSecretKey is the SECRET_KEY tests seal auth tokens with.
var testSecretKey = []byte("0123456789abcdef0123456789abcdef")

// Sealer returns the sealer tests use.
func Sealer(t testing.TB) *store.Sealer {
	t.Helper()
	s, err := store.NewSealer(testSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Tenant is a fixture tenant with one Twilio account and its numbers.
type Tenant struct {
	ID     string
	APIKey string
	// SigningSecret signs what Conversa sends the tenant (tools, events).
	SigningSecret string
	AccountSID    string
	AuthToken     string
	// SMS and WhatsApp are the tenant's numbers, unique per fixture.
	SMS      string
	WhatsApp string
}

// PhoneNumber returns a random E.164 number in the 555 range.
func PhoneNumber() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1e7))
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("+1555%07d", n.Int64())
}

// NewTenant creates a tenant with an account, an SMS and a WhatsApp number,
// and the given credits, on db (a pool, or a test transaction).
func NewTenant(t testing.TB, db store.DBTX, credits int64) Tenant {
	t.Helper()
	ctx := context.Background()
	ten, keys, err := store.CreateTenant(ctx, db, Sealer(t), "tenant-"+Unique())
	if err != nil {
		t.Fatal(err)
	}
	f := Tenant{
		ID:            ten.ID,
		APIKey:        keys.APIKey,
		SigningSecret: keys.SigningSecret,
		AccountSID:    "AC" + Unique() + Unique() + Unique()[:8],
		AuthToken:     "tok" + Unique() + Unique(),
		SMS:           PhoneNumber(),
		WhatsApp:      "whatsapp:" + PhoneNumber(),
	}
	sealed, err := Sealer(t).Seal(f.AuthToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.AddAccount(ctx, db, f.ID, f.AccountSID, sealed, []string{f.SMS, f.WhatsApp}); err != nil {
		t.Fatal(err)
	}
	if credits > 0 {
		if _, err := store.AddCredits(ctx, db, f.ID, credits); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

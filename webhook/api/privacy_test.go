package api_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conversa/conversa/internal/testdb"
	"github.com/conversa/conversa/store"
	"github.com/conversa/conversa/webhook/internal/edgetest"
)

// TestAPIEraseContact: a tenant erases its own contact by address (the
// whole pipeline and a database dump are in jobs/erasure_e2e_test.go); the
// conversation stays, closed and anonymous, and the audit record names the
// tenant key. Bad addresses are 400 naming the field, an unknown contact
// or another tenant's is 404, and neither changes anything.
func TestAPIEraseContact(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	w := newWorld(t, o)
	other := newWorld(t, o)
	path := "/api/v1/tenants/" + w.ten.ID + "/contacts/"

	for _, bad := range []string{"15551234567", "+1555abc", "whatsapp:", "%2B1%20555"} {
		rec := o.Do(t, http.MethodDelete, path+bad, edgetest.Bearer(w.ten.APIKey), nil)
		require.Equal(t, http.StatusBadRequest, rec.Code, "%s: %s", bad, rec.Body.String())
		require.Contains(t, rec.Body.String(), "address", bad)
	}
	rec := o.Do(t, http.MethodDelete, path+url.PathEscape(testdb.PhoneNumber()), edgetest.Bearer(w.ten.APIKey), nil)
	require.Equal(t, http.StatusNotFound, rec.Code, "no such contact")
	rec = o.Do(t, http.MethodDelete, "/api/v1/tenants/"+other.ten.ID+"/contacts/"+url.PathEscape(other.conv.ContactAddress), edgetest.Bearer(w.ten.APIKey), nil)
	require.Equal(t, http.StatusNotFound, rec.Code, "another tenant's contact")
	still := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations", edgetest.Bearer(other.ten.APIKey), nil, 200)
	require.Equal(t, other.conv.ContactAddress, still.Items[0].ContactAddress)

	// A bare number erases the contact on WhatsApp too.
	bare := strings.TrimPrefix(w.conv.ContactAddress, "whatsapp:")
	out := call[struct {
		Erased []struct {
			ContactID int64            `json:"contact_id"`
			ErasureID int64            `json:"erasure_id"`
			Rows      map[string]int64 `json:"rows"`
		} `json:"erased"`
	}](t, o, http.MethodDelete, path+bare, edgetest.Bearer(w.ten.APIKey), nil, http.StatusOK)
	require.Len(t, out.Erased, 1)
	require.EqualValues(t, 1, out.Erased[0].Rows["messages"])

	convs := call[listOf[conversation]](t, o, "GET", "/api/v1/conversations", edgetest.Bearer(w.ten.APIKey), nil, 200)
	require.Len(t, convs.Items, 1)
	require.Equal(t, "closed", convs.Items[0].Status)
	require.True(t, strings.HasPrefix(convs.Items[0].ContactAddress, "erased:"), convs.Items[0].ContactAddress)
	msgs := call[listOf[message]](t, o, "GET", "/api/v1/conversations/"+id(w.conv.ID)+"/messages", edgetest.Bearer(w.ten.APIKey), nil, 200)
	require.Empty(t, msgs.Items[0].Body)

	var by string
	require.NoError(t, testdb.Pool(t).QueryRow(context.Background(), `SELECT requested_by FROM erasures WHERE id = $1`, out.Erased[0].ErasureID).Scan(&by))
	require.Equal(t, store.RequestedByTenantKey, by)
	rec = o.Do(t, http.MethodDelete, path+bare, edgetest.Bearer(w.ten.APIKey), nil)
	require.Equal(t, http.StatusNotFound, rec.Code, "an erased contact is gone")
}

// TestAPIRetention: days is a whole number from 1 to 36500; 0 or null keeps
// bodies forever; anything else is 400 naming days and changes nothing.
func TestAPIRetention(t *testing.T) {
	t.Parallel()
	o := edgetest.NewOps(t)
	ten := testdb.NewTenant(t, testdb.Pool(t), 0)
	other := testdb.NewTenant(t, testdb.Pool(t), 0)
	path := "/api/v1/tenants/" + ten.ID + "/retention"
	days := func() *int {
		var d *int
		require.NoError(t, testdb.Pool(t).QueryRow(context.Background(), `SELECT retention_days FROM tenants WHERE id = $1`, ten.ID).Scan(&d))
		return d
	}

	got := call[map[string]any](t, o, http.MethodPut, path, edgetest.Bearer(ten.APIKey), `{"days": 30}`, http.StatusOK)
	require.EqualValues(t, 30, got["days"])
	require.Equal(t, false, got["keep_forever"])
	require.Equal(t, 30, *days())

	for _, bad := range []string{`{}`, `{"days": -1}`, `{"days": 1.5}`, `{"days": "30"}`, `{"days": 36501}`, `{"days": true}`, `{"days": 1e3}`} {
		rec := o.Do(t, http.MethodPut, path, edgetest.Bearer(ten.APIKey), bad)
		require.Equal(t, http.StatusBadRequest, rec.Code, bad)
		require.Contains(t, rec.Body.String(), "days", bad)
		require.Equal(t, 30, *days(), "a refusal changes nothing")
	}
	rec := o.Do(t, http.MethodPut, "/api/v1/tenants/"+other.ID+"/retention", edgetest.Bearer(ten.APIKey), `{"days": 5}`)
	require.Equal(t, http.StatusNotFound, rec.Code)

	for _, forever := range []string{`{"days": 0}`, `{"days": null}`} {
		require.NoError(t, store.SetRetention(context.Background(), testdb.Pool(t), ten.ID, ptr(7)))
		got := call[map[string]any](t, o, http.MethodPut, path, edgetest.Bearer(ten.APIKey), forever, http.StatusOK)
		require.Nil(t, got["days"], forever)
		require.Equal(t, true, got["keep_forever"])
		require.Nil(t, days(), forever)
	}
	call[map[string]any](t, o, http.MethodPut, "/api/v1/tenants/"+ten.ID+"/retention", edgetest.Bearer(o.Admin), `{"days": 365}`, http.StatusOK)
	require.Equal(t, 365, *days())
}

func ptr[T any](v T) *T { return &v }

package jobargs_test

import (
	"reflect"
	"testing"

	"github.com/riverqueue/river"

	"github.com/conversa/conversa/jobs/jobargs"
)

// TestJobArgsHoldIDsOnly: River keeps job args in its own table, for days
// after the job ran, and an erasure does not rewrite River's rows; so args
// hold ids only (a tenant id, integer ids), never an address, a name or a
// body. A new args type goes in this list.
func TestJobArgsHoldIDsOnly(t *testing.T) {
	t.Parallel()
	for _, args := range []river.JobArgs{jobargs.ReplyArgs{}, jobargs.SendArgs{}, jobargs.EventArgs{}} {
		typ := reflect.TypeOf(args)
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			switch {
			case f.Type.Kind() == reflect.Int64:
			case f.Type.Kind() == reflect.String && f.Name == "TenantID":
			default:
				t.Errorf("%s.%s (%s): job args hold ids only", typ.Name(), f.Name, f.Type)
			}
		}
	}
}

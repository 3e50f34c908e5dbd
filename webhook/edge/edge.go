package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/conversa/conversa/store"
)

// DB is the database the edge needs: queries, transactions and a ping.
// *pgxpool.Pool satisfies it.
type DB interface {
	store.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
	Ping(ctx context.Context) error
}

// Inserter inserts River jobs inside the caller's transaction; *river.Client
// satisfies it (an insert-only client is enough).
type Inserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}

// MaxBodyBytes is the largest request body accepted (413 beyond), webhook
// and API alike.
const MaxBodyBytes = 64 << 10

// ErrTooLarge is a request body over MaxBodyBytes; each edge maps it to 413.
var ErrTooLarge = errors.New("request body too large")

// ReadBody reads the request body, at most MaxBodyBytes of it: a larger one
// is ErrTooLarge.
func ReadBody(c *gin.Context) ([]byte, error) {
	return ReadBodyUpTo(c, MaxBodyBytes)
}

// ReadBodyUpTo is ReadBody for a route that takes bodies up to limit.
func ReadBodyUpTo(c *gin.Context, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, ErrTooLarge
		}
		return nil, fmt.Errorf("read body: %w", err)
	}
	return body, nil
}

// Clean makes outside text storable: valid UTF-8 and no NUL (Postgres text
// accepts neither), so odd encodings never turn into a 500.
func Clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

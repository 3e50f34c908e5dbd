package jobargs

import (
	"context"
	"fmt"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// JobCanceller lists and cancels jobs inside the caller's transaction;
// *river.Client satisfies it.
type JobCanceller[TTx any] interface {
	JobListTx(ctx context.Context, tx TTx, params *river.JobListParams) (*river.JobListResult, error)
	JobCancelTx(ctx context.Context, tx TTx, jobID int64) (*rivertype.JobRow, error)
}

// unfinished are the states of a job that may still run.
var unfinished = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
	rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

// CancelJobsOf cancels, inside tx, every unfinished turn of the
// conversations and send of the messages (an erased contact's): River keeps
// them as cancelled, and none of them runs again. A running one is asked to
// stop; whatever it does next finds its message failed or its conversation
// closed. It returns how many jobs it cancelled.
func CancelJobsOf[TTx any](ctx context.Context, tx TTx, c JobCanceller[TTx], conversations, messages []int64) (int64, error) {
	if len(conversations) == 0 && len(messages) == 0 {
		return 0, nil
	}
	params := river.NewJobListParams().States(unfinished...).Kinds(ReplyArgs{}.Kind(), SendArgs{}.Kind()).First(1000).
		Where(`((kind = @reply_kind AND (args->>'conversation_id')::bigint = ANY(@conversations))
			OR (kind = @send_kind AND (args->>'message_id')::bigint = ANY(@messages)))`,
			river.NamedArgs{"reply_kind": ReplyArgs{}.Kind(), "send_kind": SendArgs{}.Kind(),
				"conversations": conversations, "messages": messages})
	var n int64
	for {
		res, err := c.JobListTx(ctx, tx, params)
		if err != nil {
			return n, fmt.Errorf("list jobs to cancel: %w", err)
		}
		for _, j := range res.Jobs {
			if _, err := c.JobCancelTx(ctx, tx, j.ID); err != nil {
				return n, fmt.Errorf("cancel job %d: %w", j.ID, err)
			}
			n++
		}
		if len(res.Jobs) < 1000 || res.LastCursor == nil {
			return n, nil
		}
		params = params.After(res.LastCursor)
	}
}

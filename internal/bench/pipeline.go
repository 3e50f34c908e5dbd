package main

import (
	"context"
	"errors"
)

// The pipeline figures need the reply and send workers and the fake Twilio.
var errPipelinePending = errors.New("needs the reply and send workers (not merged yet)")

func (b *bench) e2eFigure(ctx context.Context, r *report) error       { return errPipelinePending }
func (b *bench) sustainedFigure(ctx context.Context, r *report) error { return errPipelinePending }
func (b *bench) memoryFigure(ctx context.Context, r *report) error    { return errPipelinePending }
func (b *bench) curveFigure(ctx context.Context, r *report) error     { return errPipelinePending }

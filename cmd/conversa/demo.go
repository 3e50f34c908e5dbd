package main

import (
	"context"
	"errors"
)

type demoCmd struct{}

// Run is not built yet: see the operator-surface issue.
func (demoCmd) Run(ctx context.Context, a *app) error {
	return errors.New("demo is not available yet")
}

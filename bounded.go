package writethrough

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// go-redis only watches a context's deadline when the client was built with
// Options.ContextTimeoutEnabled; otherwise a stalled Redis holds a call for
// the client's own ReadTimeout (5s by default), and Config.ReadTimeout and
// Config.WriteTimeout would bound nothing. So with such a client every Redis
// call runs in a goroutine the caller stops waiting for when its context
// ends. The abandoned call finishes in the background, bounded by the
// client's timeouts; every command the plugin sends is safe to land late
// (scripts check the lease or fence they act for).

// honoursDeadlines reports whether the client gives up on a call when its
// context's deadline passes.
func honoursDeadlines(c redis.UniversalClient) bool {
	switch x := c.(type) {
	case *redis.Client:
		return x.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return x.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return x.Options().ContextTimeoutEnabled
	}
	return false
}

// bounded runs call and returns its result, or ctx's error as soon as ctx
// ends. call must not touch anything the caller reads after an error.
func bounded[T any](p *Plugin, ctx context.Context, call func() (T, error)) (T, error) {
	if p.deadlines {
		return call()
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := call()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// pipelinedRaw sends plain commands (no scripts) in one round trip,
// bounded by ctx.
func (p *Plugin) pipelinedRaw(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	return bounded(p, ctx, func() ([]redis.Cmder, error) { return p.rdb.Pipelined(ctx, fn) })
}

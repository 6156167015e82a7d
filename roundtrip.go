package writethrough

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounded round trips: every command the plugin sends to Redis goes
// through roundTrip (docs/protocol.md, section 6.11).

// sink is where a round trip's commands go: the client itself for a lone
// command, a pipeline for several.
type sink interface {
	redis.Scripter
	Do(ctx context.Context, args ...any) *redis.Cmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
}

// roundTrip sends n commands in one round trip bounded by d (see
// withTimeout) and returns them, answered, in order; on error it returns
// none. cmd(ctx, s, i) issues command i on s. Scripts go by hash (EVALSHA):
// if the server does not know one (it restarted or was flushed) every
// script is loaded and the commands are issued once more, so every command
// must be safe to repeat.
//
// The commands go in one pipeline, except that with alone set a lone
// command is sent by itself: the read path does so, because a pipeline
// costs allocations (and go-redis keeps pipelines on connections of their
// own). Writes always pipeline.
func (p *Plugin) roundTrip(ctx context.Context, d time.Duration, alone bool, n int, cmd func(ctx context.Context, s sink, i int) redis.Cmder) ([]redis.Cmder, error) {
	if n == 0 {
		return nil, nil
	}
	var cmds []redis.Cmder
	err := p.withTimeout(ctx, p.boundedBy(d), func(ctx context.Context, rdb redis.UniversalClient) error {
		var err error
		cmds, err = issue(ctx, rdb, alone, n, cmd)
		if !hasNoScript(cmds, err) {
			return err
		}
		for _, s := range allScripts {
			if err := s.Load(ctx, rdb).Err(); err != nil {
				return err
			}
		}
		cmds, err = issue(ctx, rdb, alone, n, cmd)
		return err
	})
	if err != nil {
		return nil, err
	}
	return cmds, nil
}

// issue sends the commands once (see roundTrip).
func issue(ctx context.Context, rdb redis.UniversalClient, alone bool, n int, cmd func(ctx context.Context, s sink, i int) redis.Cmder) ([]redis.Cmder, error) {
	if alone && n == 1 {
		c := cmd(ctx, rdb, 0)
		return []redis.Cmder{c}, c.Err()
	}
	return rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i := 0; i < n; i++ {
			cmd(ctx, pipe, i)
		}
		return nil
	})
}

// boundedBy returns the client whose calls end within d: the read or the
// write one (see newBounded), or, for a limit neither has, the user's
// client with its calls run aside.
func (p *Plugin) boundedBy(d time.Duration) bounded {
	switch d {
	case p.read.d:
		return p.read
	case p.write.d:
		return p.write
	}
	return bounded{rdb: p.rdb, d: d}
}

// withTimeout runs fn on b's client, bounded by b.d (none when it is <= 0).
// The context gets that deadline, which bounds what go-redis waits for by
// context whatever its options (a pool slot, a dial, a retry's backoff).
// The socket reads and writes are bounded by the client itself: a
// WithTimeout clone's deadlines are b.d, and a client with
// ContextTimeoutEnabled ends them at the context's deadline. Any other
// client would hold a call to a Redis that accepted the connection and
// stopped answering for its own read timeout (seconds): there fn runs
// aside, and the caller stops waiting for it at the deadline; the client's
// pool, whose waits do end at the deadline, bounds how many such calls can
// be left behind. Every call the plugin makes is safe to land late: fences
// expire, and the scripts check the lease or fence they were given.
func (p *Plugin) withTimeout(ctx context.Context, b bounded, fn func(context.Context, redis.UniversalClient) error) error {
	if b.d <= 0 {
		return fn(ctx, b.rdb)
	}
	ctx, cancel := context.WithTimeout(b.route(ctx), b.d)
	defer cancel()
	if b.socket || b.ctxDeadlines {
		return fn(ctx, b.rdb)
	}
	done := make(chan error, 1)
	go func() { done <- fn(ctx, b.rdb) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// isNoScript reports a NOSCRIPT reply: the server has not seen the script.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

func hasNoScript(cmds []redis.Cmder, err error) bool {
	if isNoScript(err) {
		return true
	}
	for _, c := range cmds {
		if isNoScript(c.Err()) {
			return true
		}
	}
	return false
}

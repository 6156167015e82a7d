// Package writethrough is a GORM plugin that keeps Redis in step with the
// database by write-through caching.
//
//	db.Use(writethrough.New(rdb, writethrough.Config{}))
//
// From then on every create, update, save and delete that commits writes the
// row's new state (or its absence) to Redis before the call returns, and
// primary-key reads (First, Take, Last, Find by id or id list, Where("id = ?"),
// a model with its key set) are served from Redis, filling it on a miss.
//
// The cache never serves state that was rolled back, and never serves an older
// state after a newer one has committed and returned. The protocol that keeps
// those promises (fences, leases, guarded fills) is described in
// docs/protocol.md.
package writethrough

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
)

// WritePolicy says what a write does when Redis cannot be reached to fence the
// rows it changes before they become visible.
type WritePolicy int

const (
	// Strict fails the write (and rolls its transaction back) when its keys
	// cannot be fenced. Nothing stale can be served, at the cost of writes
	// depending on Redis being up. It is the default.
	Strict WritePolicy = iota
	// Available lets the write commit; the keys it could not fence are queued
	// for invalidation and this process reads them from the database until the
	// invalidation lands. Other processes may serve the previous value until
	// then, so the window is as long as Redis stays unreachable from here.
	Available
)

// String returns the policy's name.
func (w WritePolicy) String() string {
	switch w {
	case Strict:
		return "strict"
	case Available:
		return "available"
	}
	return fmt.Sprintf("WritePolicy(%d)", int(w))
}

// Plugin is the writethrough GORM plugin. Create it with New and install it
// with db.Use. One Plugin serves one *gorm.DB.
type Plugin struct {
	rdb      redis.UniversalClient
	cfg      Config
	db       *gorm.DB // the DB the plugin is installed on, for parsing models
	models   models
	stats    counters
	flights  flights
	dirty    dirtyKeys
	fks      fkIndex
	token    string        // this process's prefix for lease ids and fence tokens
	prepared preparedNames // PREPARE name -> tables, for EXECUTE name
	seq      atomic.Uint64
	warnOnce sync.Once
	// hooks lets tests pause the protocol at exact points; nil in production.
	hooks *testHooks

	// read and write are how the plugin's Redis calls are bounded by
	// ReadTimeout and WriteTimeout (see newBounded).
	read, write bounded
	// crossSlot: the client is one server, which MGETs keys of any slot
	// together (see snapshot).
	crossSlot bool
	// leaseMSArg is Config.LeaseTTL in milliseconds as a read-script
	// argument, formatted and boxed once.
	leaseMSArg any
	// genTTLms is the generation TTL in milliseconds (a string), boxed
	// once; it grows when a model with a longer CacheTTL appears (see
	// genTTLArg).
	genTTLms atomic.Value
	// resolver names tables as the database resolves them, inside the
	// database's identity (identity.go); set by Initialize.
	resolver *tableResolver
}

// New returns a plugin that caches through client. The config is validated
// when the plugin is installed (db.Use returns the error).
func New(client redis.UniversalClient, cfg Config) *Plugin {
	p := &Plugin{rdb: client, cfg: cfg.withDefaults()}
	_, p.crossSlot = client.(*redis.Client)
	p.read = newBounded(client, p.cfg.ReadTimeout)
	p.write = newBounded(client, p.cfg.WriteTimeout)
	if p.cfg.ReadTimeout == p.cfg.WriteTimeout {
		p.write = p.read // one clone, not two, when the bounds agree
	}
	if c, ok := client.(*redis.Client); ok && (p.read.clone != nil || p.write.clone != nil) {
		c.AddHook(cloneRouter{})
	}
	p.leaseMSArg = strconvMS(p.cfg.LeaseTTL)
	p.noteEntryTTL(p.cfg.TTL)
	p.token = randomToken()
	p.dirty.init(p.cfg.MaxQueuedInvalidations)
	return p
}

// bounded is a client whose calls end within a time limit, and how it
// does so, chosen once per limit by newBounded:
//
//   - a *redis.Client (also what NewFailoverClient returns) is cloned with
//     (*redis.Client).WithTimeout: the clone shares the client's connection
//     pool and sets every socket read and write deadline to the limit
//     itself, so a call needs no goroutine, and on the hit path no timer;
//   - any other client (*redis.ClusterClient, *redis.Ring, a wrapper) that
//     sets ContextTimeoutEnabled ends calls at their context's deadline;
//   - any other client runs each bounded call aside, in a goroutine the
//     caller stops waiting for at the deadline (see withTimeout).
type bounded struct {
	rdb redis.UniversalClient // where the calls go
	d   time.Duration         // the limit; none when <= 0
	// clone, when set, is rdb's WithTimeout clone: calls sent on rdb with
	// a context from route are carried out by it (see cloneRouter).
	clone *redis.Client
	// socket: the calls' socket deadlines are d (they go through clone).
	socket bool
	// ctxDeadlines: rdb ends a call at its context's deadline.
	ctxDeadlines bool
}

// newBounded returns how calls on client are bounded by d.
func newBounded(client redis.UniversalClient, d time.Duration) bounded {
	b := bounded{rdb: client, d: d}
	if d <= 0 {
		return b
	}
	switch c := client.(type) {
	case *redis.Client:
		b.clone, b.socket = c.WithTimeout(d), true
		b.ctxDeadlines = c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		b.ctxDeadlines = c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		b.ctxDeadlines = c.Options().ContextTimeoutEnabled
	}
	return b
}

// route returns the context a call on b.rdb is sent with: one that hands
// it to b's clone, if b has one.
func (b *bounded) route(ctx context.Context) context.Context {
	if b.clone == nil {
		return ctx
	}
	return context.WithValue(ctx, routeKey{}, b.clone)
}

// routeKey is the context key of the clone a call is handed to.
type routeKey struct{}

// cloneRouter is the hook New adds to a *redis.Client. A WithTimeout clone
// carries none of the client's hooks, so the plugin sends its calls on the
// client itself, with a context naming the clone (bounded.route): the hooks
// added to the client before New run (tracing and metrics see the plugin's
// calls), and this one, innermost of them, hands the call to the clone,
// whose socket deadlines bound it. Hooks added to the client after New are
// inside this one and do not see the plugin's calls. Every other call goes
// on as it would without the plugin.
type cloneRouter struct{}

// DialHook implements redis.Hook.
func (cloneRouter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (cloneRouter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if c, ok := ctx.Value(routeKey{}).(*redis.Client); ok {
			return c.Process(ctx, cmd)
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (cloneRouter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c, ok := ctx.Value(routeKey{}).(*redis.Client)
		if !ok {
			return next(ctx, cmds)
		}
		pipe := c.Pipeline()
		for _, cmd := range cmds {
			_ = pipe.Process(ctx, cmd) // queues it
		}
		_, err := pipe.Exec(ctx)
		return err
	}
}

// Name implements gorm.Plugin.
func (p *Plugin) Name() string { return "writethrough" }

// Initialize implements gorm.Plugin: it validates the config, wraps the
// connection pool so that commits and rollbacks are seen, and registers the
// callbacks.
func (p *Plugin) Initialize(db *gorm.DB) error {
	if p.rdb == nil {
		return errors.New("writethrough: New needs a Redis client, got nil")
	}
	if err := p.cfg.validate(); err != nil {
		return err
	}
	if err := p.identify(db); err != nil {
		return err
	}
	p.db = db
	p.wrapConnPool(db)
	return p.registerCallbacks(db)
}

// Stats returns a snapshot of the plugin's counters.
func (p *Plugin) Stats() Stats { return p.stats.snapshot() }

// ttl returns the value TTL with jitter applied.
func (p *Plugin) ttl(model ttlOverride) time.Duration {
	base := p.cfg.TTL
	if model.ttl > 0 {
		base = model.ttl
	}
	if p.cfg.TTLJitter > 0 {
		base += time.Duration(rand.Float64() * p.cfg.TTLJitter * float64(base))
	}
	return base
}

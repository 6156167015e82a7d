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
	prepared preparedNames // PREPARE name -> tables, for EXECUTE name
	token    string        // this process's prefix for lease ids and fence tokens
	seq      atomic.Uint64
	warnOnce sync.Once
	// hooks lets tests pause the protocol at exact points; nil in production.
	hooks *testHooks

	// ctxDeadlines is true when the client itself ends a call at its
	// context's deadline (see withTimeout).
	ctxDeadlines bool
	// leaseMSArg is Config.LeaseTTL in milliseconds as a read-script
	// argument, formatted and boxed once.
	leaseMSArg any
	// resolver names tables as the database resolves them, inside the
	// database's identity (identity.go); set by Initialize.
	resolver *tableResolver
}

// New returns a plugin that caches through client. The config is validated
// when the plugin is installed (db.Use returns the error).
func New(client redis.UniversalClient, cfg Config) *Plugin {
	p := &Plugin{rdb: client, cfg: cfg.withDefaults(), ctxDeadlines: honorsDeadlines(client)}
	p.leaseMSArg = strconvMS(p.cfg.LeaseTTL)
	p.token = randomToken()
	p.dirty.init()
	return p
}

// honorsDeadlines reports whether a go-redis client ends calls at their
// context's deadline (Options.ContextTimeoutEnabled).
func honorsDeadlines(c redis.UniversalClient) bool {
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

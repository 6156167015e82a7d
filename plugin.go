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
// those promises (fences, leases, guarded fills) is described in README.md.
package writethrough

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
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

// Config tunes the plugin. Its zero value is a good default; every field
// documents the default it stands for.
type Config struct {
	// Prefix starts every key the plugin writes. Default "wt". It must not
	// contain '{' or '}' (they would change the Redis Cluster hash slot).
	Prefix string

	// TTL is how long a cached row lives. Default 1h.
	TTL time.Duration
	// TTLJitter spreads expiries so that a warm-up does not expire all at
	// once: each entry lives TTL plus a random extra of up to TTL*TTLJitter.
	// Default 0.1; a negative value disables the jitter.
	TTLJitter float64
	// NotFoundTTL is how long "this row does not exist" is cached. Default
	// 30s; a negative value disables caching absent rows.
	NotFoundTTL time.Duration
	// LockTTL bounds how long a write's fence, and a crashed writer's, keeps
	// readers on the database. It must exceed the longest transaction that
	// writes cached rows. Default 10s.
	LockTTL time.Duration
	// LeaseTTL bounds how long a reader's fill lease lives. Default 2s.
	LeaseTTL time.Duration
	// ContendedTTL is how long a key stays uncacheable after two writers
	// raced on it. Default 1s.
	ContendedTTL time.Duration

	// ReadTimeout bounds every Redis call on the read path; when it passes
	// the read falls back to the database. Default 100ms; negative disables
	// the per-call timeout (the client's own timeouts still apply).
	ReadTimeout time.Duration
	// WriteTimeout bounds every Redis call on the write path. Default 1s.
	WriteTimeout time.Duration
	// OnRedisError chooses what a write does when Redis is unreachable.
	// Default Strict.
	OnRedisError WritePolicy

	// TableShards is how many Redis Cluster hash slots one table's keys are
	// spread over. Table-level invalidation touches one key per shard. It is
	// part of the key layout: every process sharing a Redis must use the
	// same value. Default 16.
	TableShards int

	// Codec turns rows into bytes. Default BinaryCodec.
	Codec Codec
	// Logger receives the plugin's warnings. Default slog.Default().
	Logger *slog.Logger
}

const (
	defaultPrefix       = "wt"
	defaultTTL          = time.Hour
	defaultTTLJitter    = 0.1
	defaultNotFoundTTL  = 30 * time.Second
	defaultLockTTL      = 10 * time.Second
	defaultLeaseTTL     = 2 * time.Second
	defaultContendedTTL = time.Second
	defaultReadTimeout  = 100 * time.Millisecond
	defaultWriteTimeout = time.Second
	defaultTableShards  = 16
)

// withDefaults returns the config with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = defaultPrefix
	}
	if c.TTL == 0 {
		c.TTL = defaultTTL
	}
	if c.TTLJitter == 0 {
		c.TTLJitter = defaultTTLJitter
	}
	if c.NotFoundTTL == 0 {
		c.NotFoundTTL = defaultNotFoundTTL
	}
	if c.LockTTL == 0 {
		c.LockTTL = defaultLockTTL
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = defaultLeaseTTL
	}
	if c.ContendedTTL == 0 {
		c.ContendedTTL = defaultContendedTTL
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = defaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = defaultWriteTimeout
	}
	if c.TableShards == 0 {
		c.TableShards = defaultTableShards
	}
	if c.Codec == nil {
		c.Codec = BinaryCodec{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate reports settings that cannot work.
func (c Config) validate() error {
	var errs []error
	if strings.ContainsAny(c.Prefix, "{}") {
		errs = append(errs, fmt.Errorf("Prefix %q must not contain '{' or '}'", c.Prefix))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"TTL", c.TTL}, {"LockTTL", c.LockTTL}, {"LeaseTTL", c.LeaseTTL}, {"ContendedTTL", c.ContendedTTL}, {"WriteTimeout", c.WriteTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %v", d.name, d.v))
		}
	}
	if c.TTLJitter > 1 {
		errs = append(errs, fmt.Errorf("TTLJitter must be at most 1, got %v", c.TTLJitter))
	}
	if c.TableShards < 1 || c.TableShards > 1024 {
		errs = append(errs, fmt.Errorf("TableShards must be between 1 and 1024, got %d", c.TableShards))
	}
	if c.OnRedisError != Strict && c.OnRedisError != Available {
		errs = append(errs, fmt.Errorf("OnRedisError: unknown policy %v", c.OnRedisError))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("writethrough: invalid Config: %w", err)
	}
	return nil
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
	token    string // this process's prefix for lease ids and fence tokens
	seq      atomic.Uint64
	warnOnce sync.Once
	// deadlines is true when the client itself gives up at a context's
	// deadline; otherwise Redis calls are bounded by bounded().
	deadlines bool
	// hooks lets tests pause the protocol at exact points; nil in production.
	hooks *testHooks
}

// New returns a plugin that caches through client. The config is validated
// when the plugin is installed (db.Use returns the error).
func New(client redis.UniversalClient, cfg Config) *Plugin {
	p := &Plugin{rdb: client, cfg: cfg.withDefaults(), deadlines: honoursDeadlines(client)}
	p.token = randomToken()
	p.dirty.init()
	return p
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

package writethrough

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"
)

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

	// MaxQueuedInvalidations bounds the keys the Available policy queues
	// for invalidation while Redis is unreachable. When more would be
	// queued, the queued keys are replaced by their tables, which are then
	// invalidated whole (every shard's generation bumped) once Redis
	// answers. Default 10000.
	MaxQueuedInvalidations int

	// TableShards is how many Redis Cluster hash slots one table's keys are
	// spread over. Table-level invalidation touches one key per shard. It is
	// part of the key layout: every process sharing a Redis must use the
	// same value. Default 16.
	TableShards int

	// MaxEntryBytes bounds the size of one cached row's entry. A row that
	// encodes larger is not cached: a write invalidates its key instead of
	// writing it through, a read does not fill it, and an entry over the
	// limit found in Redis is not decoded but replaced. Each counts in
	// Stats.Oversized. Default 1 MiB; negative disables the limit.
	MaxEntryBytes int
	// Database names the database in every key, so that databases sharing
	// one Redis never read each other's rows. Default: derived from the
	// connection when the plugin is installed: "postgres.<database name>",
	// "mysql" (MySQL tables are keyed with their database's name), or
	// "sqlite.<hash of the main file's path>". Processes whose databases
	// really are one (a primary and its replicas, reached under different
	// names) share the cache by setting the same value; databases of the
	// same name on different servers are told apart by setting different
	// ones. It is part of the key layout.
	Database string

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

	defaultMaxEntryBytes = 1 << 20

	defaultMaxQueuedInvalidations = 10000
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
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = defaultMaxEntryBytes
	}
	if c.MaxQueuedInvalidations == 0 {
		c.MaxQueuedInvalidations = defaultMaxQueuedInvalidations
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
	if c.TTLJitter > 1 || math.IsNaN(c.TTLJitter) {
		errs = append(errs, fmt.Errorf("TTLJitter must be at most 1, got %v", c.TTLJitter))
	}
	if c.TableShards < 1 || c.TableShards > 1024 {
		errs = append(errs, fmt.Errorf("TableShards must be between 1 and 1024, got %d", c.TableShards))
	}
	if c.MaxQueuedInvalidations < 0 {
		errs = append(errs, fmt.Errorf("MaxQueuedInvalidations must not be negative, got %d", c.MaxQueuedInvalidations))
	}
	if c.OnRedisError != Strict && c.OnRedisError != Available {
		errs = append(errs, fmt.Errorf("OnRedisError: unknown policy %v", c.OnRedisError))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("writethrough: invalid Config: %w", err)
	}
	return nil
}

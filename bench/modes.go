package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	gormcache "github.com/Pacific73/gorm-cache/cache"
	gormcacheconfig "github.com/Pacific73/gorm-cache/config"
	"github.com/go-gorm/caches/v4"
	redisv8 "github.com/go-redis/redis/v8"
	"github.com/gormcache/writethrough"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
)

// A mode is one way of serving the same primary-key reads and writes.
type mode struct {
	name string
	// read loads the row with the id (First by primary key).
	read func(ctx context.Context, id uint) error
	// write changes two columns of the row with the id.
	write func(ctx context.Context, id uint, n int) error
	// stats, when set, describes the library's own counters since mark.
	stats func() string
	mark  func()
	// close releases what the mode holds (keys, clients).
	close func(ctx context.Context) error
}

// gormRead is a GORM First by primary key, checked.
func gormRead(db *gorm.DB) func(ctx context.Context, id uint) error {
	return func(ctx context.Context, id uint) error {
		var r Row
		if err := db.WithContext(ctx).First(&r, id).Error; err != nil {
			return err
		}
		if r.ID != id {
			return fmt.Errorf("read id %d, got the row with id %d", id, r.ID)
		}
		return nil
	}
}

// gormWrite updates two columns by primary key (GORM adds updated_at).
func gormWrite(db *gorm.DB) func(ctx context.Context, id uint, n int) error {
	return func(ctx context.Context, id uint, n int) error {
		res := db.WithContext(ctx).Model(&Row{ID: id}).Updates(map[string]any{"stock": n, "price_cents": int64(n) + 1000})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("update id %d: %d rows affected", id, res.RowsAffected)
		}
		return nil
	}
}

func noClose(context.Context) error { return nil }

// plainMode is GORM with no cache: the baseline of every ratio.
func plainMode(d *database) (*mode, error) {
	db, err := d.gorm()
	if err != nil {
		return nil, err
	}
	return &mode{name: "plain GORM", read: gormRead(db), write: gormWrite(db), close: noClose}, nil
}

// pluginMode is GORM with writethrough, default Config but for the prefix.
func pluginMode(d *database, rdb *redis.Client, prefix string) (*mode, *writethrough.Plugin, error) {
	db, err := d.gorm()
	if err != nil {
		return nil, nil, err
	}
	p := writethrough.New(rdb, writethrough.Config{Prefix: prefix})
	if err := db.Use(p); err != nil {
		return nil, nil, fmt.Errorf("install writethrough: %w", err)
	}
	var base writethrough.Stats
	m := &mode{
		name: "writethrough", read: gormRead(db), write: gormWrite(db),
		close: func(ctx context.Context) error { return deleteKeys(ctx, rdb, prefix+":*") },
	}
	m.stats = func() string {
		s := p.Stats()
		out := fmt.Sprintf("hits %d, misses %d, fills %d, bypasses %d, writes through %d, invalidations %d, Redis errors %d, decode errors %d",
			s.Hits-base.Hits, s.Misses-base.Misses, s.Fills-base.Fills, s.Bypasses-base.Bypasses,
			s.WritesThrough-base.WritesThrough, s.Invalidations-base.Invalidations, s.RedisErrors-base.RedisErrors, s.DecodeErrors-base.DecodeErrors)
		return out
	}
	m.mark = func() { base = p.Stats() }
	return m, p, nil
}

// ceilingKeys are the three keys a hit of a Redis-backed design reads at
// the least: the row's entry and its shard's generation and fence.
type ceilingKeys [3]string

// ceilingMode is the upper bound of any design that serves a hit from
// Redis: GORM builds the statement exactly as for a real read (DryRun), then
// one MGET of three keys stands for the cache read. It decodes nothing and
// never consults the database; its writes are plain GORM's.
func ceilingMode(ctx context.Context, d *database, rdb *redis.Client, prefix string, ids []uint) (*mode, error) {
	db, err := d.gorm()
	if err != nil {
		return nil, err
	}
	dry := db.Session(&gorm.Session{DryRun: true})
	const shards = 16
	keys := make(map[uint]ceilingKeys, len(ids))
	pipe := rdb.Pipeline()
	for i, id := range ids {
		shard := id % shards
		k := ceilingKeys{
			fmt.Sprintf("%s:{t:%d}:k:%d", prefix, shard, id),
			fmt.Sprintf("%s:{t:%d}:g", prefix, shard),
			fmt.Sprintf("%s:{t:%d}:f", prefix, shard), // never set: MGET returns nil for it, as for an unfenced row
		}
		keys[id] = k
		entry, err := json.Marshal(newRow(i))
		if err != nil {
			return nil, err
		}
		pipe.Set(ctx, k[0], entry, time.Hour)
		pipe.Set(ctx, k[1], "1", time.Hour)
		if pipe.Len() >= 1000 {
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, fmt.Errorf("seed ceiling keys: %w", err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("seed ceiling keys: %w", err)
	}
	read := func(ctx context.Context, id uint) error {
		var r Row
		if err := dry.WithContext(ctx).First(&r, id).Error; err != nil {
			return err
		}
		k := keys[id]
		vals, err := rdb.MGet(ctx, k[0], k[1], k[2]).Result()
		if err != nil {
			return err
		}
		if vals[0] == nil {
			return fmt.Errorf("ceiling key %s is missing", k[0])
		}
		return nil
	}
	return &mode{
		name: "ceiling: GORM build + MGET", read: read, write: gormWrite(db),
		close: func(ctx context.Context) error { return deleteKeys(ctx, rdb, prefix+":*") },
	}, nil
}

// gormCachesMode is github.com/go-gorm/caches with the Redis Cacher of its
// README ("Cacher Example (Redis)"), keys namespaced by prefix so that the
// run can clean up after itself. Its Invalidate scans the keyspace on every
// write, so it gets a logical database of its own (redisDB), where the other
// modes' keys do not lengthen the scan.
func gormCachesMode(ctx context.Context, d *database, addr string, redisDB, poolSize int, prefix string) (*mode, error) {
	db, err := d.gorm()
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: redisDB, PoolSize: poolSize})
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s db %d for go-gorm/caches: %w", addr, redisDB, err)
	}
	c := &readmeCacher{rdb: rdb, ns: prefix + ":"}
	if err := db.Use(&caches.Caches{Conf: &caches.Config{Cacher: c}}); err != nil {
		return nil, fmt.Errorf("install go-gorm/caches: %w", err)
	}
	return &mode{
		name: "go-gorm/caches", read: gormRead(db), write: gormWrite(db),
		close: func(ctx context.Context) error { return errors.Join(deleteKeys(ctx, rdb, prefix+":*"), rdb.Close()) },
	}, nil
}

// readmeCacher is the Redis Cacher from go-gorm/caches' README.
type readmeCacher struct {
	rdb *redis.Client
	ns  string
}

func (c *readmeCacher) Get(ctx context.Context, key string, q *caches.Query[any]) (*caches.Query[any], error) {
	res, err := c.rdb.Get(ctx, c.ns+key).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := q.Unmarshal([]byte(res)); err != nil {
		return nil, err
	}
	return q, nil
}

func (c *readmeCacher) Store(ctx context.Context, key string, val *caches.Query[any]) error {
	res, err := val.Marshal()
	if err != nil {
		return err
	}
	c.rdb.Set(ctx, c.ns+key, res, 300*time.Second) // as in the README
	return nil
}

func (c *readmeCacher) Invalidate(ctx context.Context) error {
	var keys []string
	var cursor uint64
	for {
		k, next, err := c.rdb.Scan(ctx, cursor, c.ns+caches.IdentifierPrefix+"*", 0).Result()
		if err != nil {
			return err
		}
		keys = append(keys, k...)
		if cursor = next; cursor == 0 {
			break
		}
	}
	if len(keys) > 0 {
		return c.rdb.Del(ctx, keys...).Err()
	}
	return nil
}

// pacificMode is github.com/Pacific73/gorm-cache configured as its README
// shows (CacheLevelAll, Redis storage, InvalidateWhenUpdate), with a TTL of
// 300 s (the README's 5 s would expire entries mid-run). It brings its own
// go-redis v8 client to the same server, on a logical database of its own
// (redisDB), because it runs KEYS over the keyspace on every write.
func pacificMode(d *database, addr string, redisDB, poolSize int) (*mode, error) {
	db, err := d.gorm()
	if err != nil {
		return nil, err
	}
	rdb := redisv8.NewClient(&redisv8.Options{Addr: addr, DB: redisDB, PoolSize: poolSize})
	c, err := gormcache.NewGorm2Cache(&gormcacheconfig.CacheConfig{
		CacheLevel:           gormcacheconfig.CacheLevelAll,
		CacheStorage:         gormcacheconfig.CacheStorageRedis,
		RedisConfig:          gormcache.NewRedisConfigWithClient(rdb),
		InvalidateWhenUpdate: true,
		CacheTTL:             300_000, // ms
		CacheMaxItemCnt:      5,
	})
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("Pacific73/gorm-cache: %w", err)
	}
	if err := db.Use(c); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("install Pacific73/gorm-cache: %w", err)
	}
	return &mode{
		name: "Pacific73/gorm-cache", read: gormRead(db), write: gormWrite(db),
		stats: func() string { return fmt.Sprintf("hits %d (its own counter)", c.GetHitCount()) },
		mark:  c.ResetHitCount,
		close: func(ctx context.Context) error {
			// Its keys are gormcache:<instance id>:...
			pattern := "gormcache:" + c.InstanceId + ":*"
			it := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
			var errs error
			for it.Next(ctx) {
				errs = errors.Join(errs, rdb.Unlink(ctx, it.Val()).Err())
			}
			return errors.Join(errs, it.Err(), rdb.Close())
		},
	}, nil
}

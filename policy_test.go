package writethrough

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// The write policy (Config.OnRedisError) when Redis cannot be reached to
// fence a write: Strict fails the write and rolls its transaction back;
// Available commits, reads the key from the database in this process until
// Redis answers, then lands the queued invalidation.

// newProxiedEnv is newEnvWith whose plugin reaches Redis through a
// faultProxy. e.rdb is a direct client, so the test can look at keys
// while the plugin cannot; the plugin's own client is returned as well.
func newProxiedEnv(t *testing.T, b backend, cfg Config, gcfg *gorm.Config) (*env, *faultProxy) {
	t.Helper()
	var px *faultProxy
	var direct redis.UniversalClient
	inner := b.redis
	b.redis = func(t testing.TB) redis.UniversalClient {
		direct = inner(t)
		px = newFaultProxy(t, direct.(*redis.Client).Options().Addr)
		c := redis.NewClient(&redis.Options{Addr: px.Addr(), MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		return c
	}
	e := newEnvWith(t, b, cfg, gcfg, &Product{})
	e.rdb = direct
	return e, px
}

// policyWrite sets a product's price in mode m. In a transaction the
// caller opened, it ignores the statement's error and commits anyway: the
// write policy must hold even then.
func policyWrite(e *env, m commitMode, id uint, price int64) error {
	write := setPrice(id, price)
	if m.nests {
		write = func(tx *gorm.DB) error {
			_ = setPrice(id, price)(tx) // the caller does not look
			return nil
		}
	}
	return m.commit(e, write)
}

func TestPolicyStrictRedisDown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range policyModes() {
			t.Run(m.name, func(t *testing.T) {
				e, px := newProxiedEnv(t, b, Config{}, m.gcfg())
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				old := peek(t, e, key)

				px.setDown(true)
				err := policyWrite(e, m, p.ID, 200)
				require.Error(t, err, "strict: the write fails when its key cannot be fenced")
				t.Logf("error: %v", err)
				require.Equal(t, int64(100), dbPrice(t, e, p.ID), "and nothing was committed")
				got, _ := readPrice(t, e, p.ID)
				require.Equal(t, int64(100), got, "reads fall back to the database while Redis is down")

				px.setDown(false)
				require.Equal(t, old, peek(t, e, key), "the cached state is still the committed one")
				requireFresh(t, e, p.ID, 100, true)
			})
		}
	})
}

// TestPolicyStrictFenceReplyLost: the fence reached Redis but its reply did
// not. The write fails and rolls back; the orphan fence keeps readers on
// the database until it expires.
func TestPolicyStrictFenceReplyLost(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range policyModes() {
			t.Run(m.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
				hook := &faultHook{}
				e.rdb.AddHook(hook)
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				hook.afterSend.Store(true)
				hook.set(isFence)
				err := policyWrite(e, m, p.ID, 200)
				hook.clear()
				require.Error(t, err)
				require.Equal(t, int64(100), dbPrice(t, e, p.ID))
				require.True(t, strings.HasPrefix(peek(t, e, key), "F"), "the fence landed")
				got, hit := readPrice(t, e, p.ID)
				require.Equal(t, int64(100), got)
				require.False(t, hit)
				expireKey(t, e, key, e.plugin.cfg.LockTTL)
				requireFresh(t, e, p.ID, 100, true)
			})
		}
	})
}

func TestPolicyAvailableRedisDown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range policyModes() {
			t.Run(m.name, func(t *testing.T) {
				cfg := Config{OnRedisError: Available, ContendedTTL: 5 * time.Second}
				e, px := newProxiedEnv(t, b, cfg, m.gcfg())
				other := twinOf(t, e, Config{}, nil) // another process, its Redis reachable
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				old := peek(t, e, key)

				px.setDown(true)
				require.NoError(t, policyWrite(e, m, p.ID, 200), "available: the write commits")
				require.Equal(t, int64(200), dbPrice(t, e, p.ID))
				require.Equal(t, old, peek(t, e, key), "the key could not be fenced")
				got, _ := readPrice(t, e, p.ID)
				require.Equal(t, int64(200), got, "this process reads the key from the database")
				got, _ = readPrice(t, other, p.ID)
				require.Equal(t, int64(100), got, "the documented window: another process serves the old value until the invalidation lands")

				px.setDown(false)
				awaitTrue(t, 10*time.Second, "the queued invalidation to land", func() bool {
					return e.plugin.dirty.n.Load() == 0 && peek(t, e, key) != old
				})
				for _, x := range []*env{e, other} {
					got, _ := readPrice(t, x, p.ID)
					require.Equal(t, int64(200), got)
				}
				expireKey(t, e, key, cfg.ContendedTTL)
				requireFresh(t, e, p.ID, 200, true)
				requireFresh(t, other, p.ID, 200, true)
			})
		}
	})
}

// TestPolicyAvailableDirtyKeysBypassTheCache: Redis answers reads but not
// writes (a replica promoted late, say): the write commits unfenced, and
// while its invalidation cannot land, this process does not serve the old
// entry still in Redis.
func TestPolicyAvailableDirtyKeysBypassTheCache(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := Config{OnRedisError: Available, ContendedTTL: 5 * time.Second}
		e := newEnv(t, b, cfg, &Product{})
		hook := &faultHook{}
		e.rdb.AddHook(hook)
		p, key := newProduct(t, e)
		warm[Product](t, e, p.ID)
		old := peek(t, e, key)
		writes := func(cmd redis.Cmder) bool {
			switch strings.ToLower(cmd.Name()) {
			case "set", "incr", "setnx":
				return true
			case "evalsha", "eval": // every script but the read's
				args := cmd.Args()
				return len(args) > 1 && args[1] != readScript.Hash()
			}
			return false
		}
		hook.set(writes)
		require.NoError(t, setPrice(p.ID, 200)(e.db))
		require.Equal(t, old, peek(t, e, key), "the old entry is still in Redis")
		for i := 0; i < 3; i++ {
			got, hit := readPrice(t, e, p.ID)
			require.Equal(t, int64(200), got)
			require.False(t, hit, "a dirty key is not served from the cache")
		}
		hook.clear()
		awaitTrue(t, 10*time.Second, "the queued invalidation to land", func() bool {
			return e.plugin.dirty.n.Load() == 0
		})
		require.Equal(t, "C", peek(t, e, key))
		expireKey(t, e, key, cfg.ContendedTTL)
		requireFresh(t, e, p.ID, 200, true)
	})
}

// TestPolicyAvailableInvalidationWaitsForCommit: the fence of a write in a
// transaction fails, and Redis comes back before the transaction commits.
// The queued invalidation must not land (and expire) before the COMMIT, or
// a reader fills the old row in between and it is served for good.
func TestPolicyAvailableInvalidationWaitsForCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := Config{OnRedisError: Available, ContendedTTL: 5 * time.Second}
		e, px := newProxiedEnv(t, b, cfg, &gorm.Config{})
		p, key := newProduct(t, e)
		warm[Product](t, e, p.ID)
		require.NoError(t, e.db.Transaction(func(tx *gorm.DB) error {
			px.setDown(true)
			if err := setPrice(p.ID, 200)(tx); err != nil {
				return err
			}
			px.setDown(false)
			// Give a premature invalidation every chance to land and expire,
			// then let a reader outside fill the committed (old) row.
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) && e.plugin.dirty.n.Load() != 0 {
				time.Sleep(5 * time.Millisecond)
			}
			if v := peek(t, e, key); v == "C" {
				expireKey(t, e, key, cfg.ContendedTTL)
			}
			got, _ := readPrice(t, e, p.ID)
			require.Equal(t, int64(100), got, "not committed yet")
			return nil
		}))
		awaitTrue(t, 10*time.Second, "the queued invalidation to land", func() bool {
			return e.plugin.dirty.n.Load() == 0
		})
		got, _ := readPrice(t, e, p.ID)
		require.Equal(t, int64(200), got, "the committed write is read, not the old row")
		expireKey(t, e, key, cfg.ContendedTTL)
		requireFresh(t, e, p.ID, 200, true)
	})
}

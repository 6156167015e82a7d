package writethrough

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEvictedGenerationKeepsTableWrites pins down what the maxmemory and
// delete-keys runs found: a shard's generation key evicted after a
// table-level write must not bring back entries that write invalidated,
// neither at once nor once later table writes count the generation up again.
func TestEvictedGenerationKeepsTableWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for _, name := range []string{"evicted", "evicted then counted up"} {
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, b, Config{TableShards: 1}, &Product{})
				mi, err := e.plugin.modelOf(&Product{})
				require.NoError(t, err)
				gen, _ := mi.shardKeys(e.prefix, 0)
				p := Product{Name: "lamp", Price: 1}
				require.NoError(t, e.db.Create(&p).Error)
				// tableWrite changes the price with a condition the plugin
				// cannot pin to keys, so it moves the generation on, and
				// then caches the row again.
				tableWrite := func(from, to int64) {
					t.Helper()
					require.NoError(t, e.db.Model(&Product{}).Where("price = ?", from).Update("price", to).Error)
					require.NoError(t, e.db.First(&Product{}, p.ID).Error)
					e.queries()
					var got Product
					require.NoError(t, e.db.First(&got, p.ID).Error)
					require.Zero(t, e.queries(), "the row is cached again")
					require.Equal(t, to, got.Price)
				}
				var want int64
				if name == "evicted" {
					// The entry was cached before any table write, when the
					// shard had no generation key yet.
					e.queries()
					require.NoError(t, e.db.First(&Product{}, p.ID).Error)
					require.Zero(t, e.queries(), "the row is cached")
					want = 2
					require.NoError(t, e.db.Model(&Product{}).Where("price = ?", 1).Update("price", want).Error)
					require.NoError(t, e.rdb.Del(ctx, gen).Err(), "evict the generation")
				} else {
					tableWrite(1, 2)
					require.NoError(t, e.db.Model(&Product{}).Where("price = ?", 2).Update("price", 3).Error)
					require.NoError(t, e.rdb.Del(ctx, gen).Err(), "evict the generation")
					want = 4
					require.NoError(t, e.db.Model(&Product{}).Where("price = ?", 3).Update("price", want).Error)
				}
				var got Product
				require.NoError(t, e.db.First(&got, p.ID).Error)
				require.Equal(t, want, got.Price, "a table write that returned was undone by evicting the generation key")
			})
		}
	})
}

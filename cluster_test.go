package writethrough

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// The plugin on Redis Cluster: three masters of our own (ports 7100-7199,
// started here, slots assigned and nodes introduced with CLUSTER commands),
// a *redis.ClusterClient, and the same promises.

// startRedisCluster starts three cluster-enabled redis-servers, gives each
// a third of the slots, and returns a client once the cluster is up.
func startRedisCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	ctx := context.Background()
	var addrs []string
	for range 3 {
		addrs = append(addrs, startRedis(t, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000"))
	}
	ranges := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	nodes := make([]*redis.Client, len(addrs))
	for i, addr := range addrs {
		nodes[i] = redis.NewClient(&redis.Options{Addr: addr})
		defer nodes[i].Close()
		require.NoError(t, nodes[i].ClusterAddSlotsRange(ctx, ranges[i][0], ranges[i][1]).Err())
	}
	for _, addr := range addrs[1:] {
		host, port, _ := strings.Cut(addr, ":")
		require.NoError(t, nodes[0].ClusterMeet(ctx, host, port).Err())
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range nodes {
		for {
			info, err := n.ClusterInfo(ctx).Result()
			require.NoError(t, err)
			if strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3") {
				break
			}
			require.True(t, time.Now().Before(deadline), "the cluster did not come up: %s", info)
			time.Sleep(50 * time.Millisecond) // gossip runs on the nodes' own clock
		}
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	for {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
		if err == nil {
			slots, err := cc.ClusterSlots(ctx).Result()
			if err == nil && len(slots) == 3 {
				break
			}
		}
		require.True(t, time.Now().Before(deadline), "the cluster client cannot see three masters: %v", err)
		time.Sleep(50 * time.Millisecond)
	}
	return cc
}

func TestRedisCluster(t *testing.T) {
	cc := startRedisCluster(t)
	ctx := context.Background()
	b := backend{name: "sqlite+cluster", dialect: "sqlite", sqlOpen: openSQLite, open: sqliteDialector,
		redis: func(testing.TB) redis.UniversalClient { return cc }}

	t.Run("writes, hits, lists, table invalidation", func(t *testing.T) {
		e := newEnv(t, b, Config{}, &Product{})
		const n = 60
		products := make([]Product, n)
		for i := range products {
			products[i] = Product{Name: fmt.Sprintf("p%d", i), Price: int64(i)}
		}
		require.NoError(t, e.db.Create(&products).Error)

		// The rows' keys are spread over every master.
		perNode := map[string]int{}
		var mu sync.Mutex // ForEachMaster runs fn on every master at once
		require.NoError(t, cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			keys, err := c.Keys(ctx, e.prefix+":*:k:*").Result()
			mu.Lock()
			perNode[c.Options().Addr] = len(keys)
			mu.Unlock()
			return err
		}))
		require.Len(t, perNode, 3)
		for addr, k := range perNode {
			require.Positive(t, k, "no row key on master %s: %v", addr, perNode)
		}

		e.queries()
		for _, p := range products {
			var got Product
			require.NoError(t, e.db.First(&got, p.ID).Error)
			require.Equal(t, p.Name, got.Name)
		}
		require.Zero(t, e.queries(), "reads after writes are served from the cluster")

		ids := make([]uint, 0, n)
		for _, p := range products {
			ids = append(ids, p.ID)
		}
		var list []Product
		require.NoError(t, e.db.Find(&list, ids).Error)
		require.Len(t, list, n)
		for i, p := range list {
			require.Equal(t, products[i].ID, p.ID, "rows in key order")
		}
		require.Zero(t, e.queries(), "a list across slots is one pipelined lookup, all hits")

		require.NoError(t, e.db.Model(&products[7]).Update("price", 700).Error)
		var got Product
		e.queries()
		require.NoError(t, e.db.First(&got, products[7].ID).Error)
		require.Zero(t, e.queries())
		require.Equal(t, int64(700), got.Price)

		// A write the plugin cannot pin to rows invalidates every shard.
		require.NoError(t, e.db.Model(&Product{}).Where("price < ?", 10).Update("price", gorm.Expr("price + ?", 1000)).Error)
		e.queries()
		list = nil
		require.NoError(t, e.db.Find(&list, ids).Error)
		require.Positive(t, e.queries(), "the table-level write invalidated the cached rows")
		for _, p := range list {
			switch {
			case p.ID == products[7].ID:
				require.Equal(t, int64(700), p.Price)
			case p.Price >= 1000:
				require.Less(t, p.Price-1000, int64(10))
			default:
				require.GreaterOrEqual(t, p.Price, int64(10))
			}
		}
		list = nil
		require.NoError(t, e.db.Find(&list, ids).Error)
		require.Zero(t, e.queries(), "refilled")

		require.NoError(t, e.plugin.InvalidateTable(ctx, &Product{}))
		var third Product
		require.NoError(t, e.db.First(&third, products[3].ID).Error)
		require.Positive(t, e.queries(), "InvalidateTable reaches every shard")
		require.Equal(t, int64(1003), third.Price)
		t.Logf("stats: %+v", e.plugin.Stats())
	})

	t.Run("history", func(t *testing.T) {
		opts := defaultHistoryOpts("", max(historySeconds(t)/3, 2*time.Second))
		opts.newClient = func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: cc.Options().Addrs})
		}
		res := runHistory(t, b, opts)
		requireHistory(t, b.name, res, opts.quietHits)
	})
}

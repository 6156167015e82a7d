package writethrough

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// Tests of the shortcuts the hit path takes: each must give exactly what
// the plain code it replaced gave.

func TestCRC32IEEEMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		require.Equal(t, crc32.ChecksumIEEE(b), crc32IEEE(b), "length %d", n)
	}
}

func TestRowKeyFromShardTable(t *testing.T) {
	// The layout is shared by every process using a Redis: these are the
	// keys the code before the shard table built.
	golden := []struct {
		parts []string
		key   rowKey
	}{
		{[]string{"1"}, rowKey{row: "pfx:{wt_products:7}:k:1", gen: "pfx:{wt_products:7}:g", fence: "pfx:{wt_products:7}:f"}},
		{[]string{"42"}, rowKey{row: "pfx:{wt_products:8}:k:42", gen: "pfx:{wt_products:8}:g", fence: "pfx:{wt_products:8}:f"}},
		{[]string{"a:b", "{x}"}, rowKey{row: "pfx:{wt_products:7}:k:a%3Ab:%7Bx%7D", gen: "pfx:{wt_products:7}:g", fence: "pfx:{wt_products:7}:f"}},
		{[]string{"\u00e9"}, rowKey{row: "pfx:{wt_products:7}:k:%C3%A9", gen: "pfx:{wt_products:7}:g", fence: "pfx:{wt_products:7}:f"}},
	}
	mi := &modelInfo{tableEsc: "wt_products"}
	mi.buildShards("pfx", 16)
	bare := &modelInfo{tableEsc: "wt_products"} // no table: keys built from scratch
	for _, g := range golden {
		require.Equal(t, g.key, mi.key("pfx", 16, g.parts))
		require.Equal(t, g.key, bare.key("pfx", 16, g.parts))
	}
	// A key longer than the stack buffer, and another prefix than the table's.
	long := string(make([]byte, 100))
	require.Equal(t, bare.key("pfx", 16, []string{long}), mi.key("pfx", 16, []string{long}))
	require.Equal(t, bare.key("other", 16, []string{"7"}), mi.key("other", 16, []string{"7"}))
	require.Equal(t, "other:{wt_products:7}:k:1", mi.key("other", 16, []string{"1"}).row)
}

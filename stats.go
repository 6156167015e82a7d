package writethrough

import "sync/atomic"

// Stats is a snapshot of the plugin's counters since it was created.
type Stats struct {
	// Hits counts rows served from Redis (a cached "not found" included).
	Hits uint64
	// Misses counts rows that were looked up in Redis and not found there.
	Misses uint64
	// Fills counts rows (or absences) written to Redis after a miss.
	Fills uint64
	// Bypasses counts reads that went to the database without asking Redis,
	// or that Redis told to use the database (a write in flight on the key).
	Bypasses uint64
	// WritesThrough counts rows whose committed state was written to Redis.
	WritesThrough uint64
	// Invalidations counts keys (or table shards) dropped instead of written,
	// because the new state could not be known or another writer raced.
	Invalidations uint64
	// RedisErrors counts failed Redis calls; reads fell back to the database.
	RedisErrors uint64
	// DecodeErrors counts cache entries that could not be decoded (corrupt or
	// written by another layout); they were treated as misses and replaced.
	DecodeErrors uint64
	// GenerationsRepaired counts shard generation keys found holding
	// something other than a generation (written by someone else) and
	// replaced, as a lost generation is (docs/protocol.md, section 4.2).
	GenerationsRepaired uint64
	// Oversized counts rows not cached because their entry would exceed
	// Config.MaxEntryBytes (invalidated instead of written through, or not
	// filled), and entries over that size found in Redis and replaced.
	Oversized uint64
}

// counters holds the live values behind Stats.
type counters struct {
	hits, misses, fills, bypasses, writesThrough, invalidations, redisErrors, decodeErrors atomic.Uint64
	generationsRepaired                                                                    atomic.Uint64
	oversized                                                                              atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Hits:          c.hits.Load(),
		Misses:        c.misses.Load(),
		Fills:         c.fills.Load(),
		Bypasses:      c.bypasses.Load(),
		WritesThrough: c.writesThrough.Load(),
		Invalidations: c.invalidations.Load(),
		RedisErrors:   c.redisErrors.Load(),
		DecodeErrors:  c.decodeErrors.Load(),

		GenerationsRepaired: c.generationsRepaired.Load(),
		Oversized:           c.oversized.Load(),
	}
}

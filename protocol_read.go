package writethrough

import (
	"context"
	"errors"
	"strings"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// The read side of the protocol (docs/protocol.md, section 8): the hit
// read, its classification, the lease, reclaim and fill senders.

// readState is what the hit read or the lease script said about one key.
type readState byte

const (
	stateBypass   readState = iota // someone is writing or filling: use the database
	stateHit                       // entry holds the row
	stateAbsent                    // the row does not exist
	stateLeased                    // we hold the lease: fill after reading the database
	stateReplaced                  // leased, replacing a value this binary cannot use ("X")
	stateCorrupt                   // a current entry that does not open (see openEntry)
	stateAsk                       // the hit read cannot serve it: ask the lease script
)

// errSnapshotReply is a hit read answered with the wrong number of values
// (not a Redis, or a broken one): the read goes to the database.
var errSnapshotReply = errors.New("writethrough: MGET answered with the wrong number of values")

// snapshot is the hit read: one MGET of each key's row, its shard's
// generation and its shard's table fence, in one round trip, with no
// script and, on a WithTimeout clone, no timer (see newBounded). MGET
// reads its keys atomically, so what classifySnapshot decides from the
// reply is what the lease script would decide at that instant, without
// the writes it would make. Each key's state, its entry (a hit) and its
// row value (for reclaim and lease checks) are put in states, entries and
// values.
//
// One key is one "MGET row gen fence". Several go in one MGET when the
// client is a single server, which can read keys of any slot together;
// other clients (Cluster, Ring) get one MGET per shard (one slot each) in
// one pipeline.
func (p *Plugin) snapshot(ctx context.Context, refs []keyRef, fp string, states []readState, entries [][]byte, values []string) error {
	if len(refs) == 1 {
		vals, err := p.mget(ctx, snapshotArgs(refs[0].key))
		if err != nil {
			return err
		}
		if len(vals) != 3 {
			return errSnapshotReply
		}
		states[0], entries[0], values[0] = p.classifySnapshot(vals[0], vals[1], vals[2], fp)
		return nil
	}

	// The shards the keys are in, in order of first appearance.
	n := len(refs)
	shardOf := make([]int, n)
	var shards []rowKey
	var index map[string]int
	if n > 16 {
		index = make(map[string]int)
	}
	for i, r := range refs {
		j := -1
		if index != nil {
			if at, ok := index[r.key.gen]; ok {
				j = at
			}
		} else {
			for at, s := range shards {
				if s.gen == r.key.gen {
					j = at
					break
				}
			}
		}
		if j < 0 {
			j = len(shards)
			shards = append(shards, r.key)
			if index != nil {
				index[r.key.gen] = j
			}
		}
		shardOf[i] = j
	}

	if p.crossSlot || len(shards) == 1 {
		args := make([]any, 0, 1+n+2*len(shards))
		args = append(args, "mget")
		for _, r := range refs {
			args = append(args, r.key.row)
		}
		for _, k := range shards {
			args = appendShardArgs(args, k)
		}
		vals, err := p.mget(ctx, args)
		if err != nil {
			return err
		}
		if len(vals) != len(args)-1 {
			return errSnapshotReply
		}
		for i := range refs {
			g := n + 2*shardOf[i]
			states[i], entries[i], values[i] = p.classifySnapshot(vals[i], vals[g], vals[g+1], fp)
		}
		return nil
	}

	perShard := make([][]any, len(shards))
	at := make([]int, n) // where key i's row is in its shard's reply
	for i, r := range refs {
		j := shardOf[i]
		if perShard[j] == nil {
			perShard[j] = []any{"mget"}
		}
		at[i] = len(perShard[j]) - 1
		perShard[j] = append(perShard[j], r.key.row)
	}
	for j, k := range shards {
		perShard[j] = appendShardArgs(perShard[j], k)
	}
	cmds, err := p.roundTrip(ctx, p.cfg.ReadTimeout, false, len(perShard), func(ctx context.Context, s sink, j int) redis.Cmder {
		return s.Do(ctx, perShard[j]...)
	})
	if err != nil {
		return err
	}
	replies := make([][]any, len(cmds))
	for j, c := range cmds {
		vals, err := c.(*redis.Cmd).Slice()
		if err != nil {
			return err
		}
		if len(vals) != len(perShard[j])-1 {
			return errSnapshotReply
		}
		replies[j] = vals
	}
	for i := range refs {
		vals := replies[shardOf[i]]
		states[i], entries[i], values[i] = p.classifySnapshot(vals[at[i]], vals[len(vals)-2], vals[len(vals)-1], fp)
	}
	return nil
}

// snapshotArgs is "MGET row gen fence" for one key, with the shard's keys
// boxed once per shard rather than per read.
func snapshotArgs(k rowKey) []any {
	if k.shard == nil {
		return []any{"mget", k.row, k.gen, k.fence}
	}
	return []any{"mget", k.row, k.shard.genArg, k.shard.fenceArg}
}

// appendShardArgs appends the generation and fence keys of k's shard.
func appendShardArgs(args []any, k rowKey) []any {
	if k.shard == nil {
		return append(args, k.gen, k.fence)
	}
	return append(args, k.shard.genArg, k.shard.fenceArg)
}

// mget sends one MGET on the read client and returns its values. On a
// WithTimeout clone (or with ReadTimeout off) it is sent as it is: the
// clone's socket deadlines bound it, so a hit costs no timer and no
// goroutine. Other clients get withTimeout.
func (p *Plugin) mget(ctx context.Context, args []any) ([]any, error) {
	if p.read.socket || p.read.d <= 0 {
		return p.read.rdb.Do(p.read.route(ctx), args...).Slice()
	}
	return p.mgetBounded(ctx, args)
}

// mgetBounded is mget through withTimeout, apart so that the hit path's
// variables do not escape into its closure.
func (p *Plugin) mgetBounded(ctx context.Context, args []any) ([]any, error) {
	var vals []any
	err := p.withTimeout(ctx, p.read, func(ctx context.Context, rdb redis.UniversalClient) error {
		var err error
		vals, err = rdb.Do(ctx, args...).Slice()
		return err
	})
	if err != nil {
		return nil, err
	}
	return vals, nil
}

// classifySnapshot decides, from one key's row value, its shard's
// generation and its shard's table fence as MGET read them together, what
// the lease script would: a table fence: bypass; a current entry of this
// layout: a hit (or corrupt, if its checksum fails); a current absence:
// absent; a lease of this process: bypass (serve waits for that fill).
// Everything else is asked of the lease script, which decides again and
// changes the key atomically: a missing generation (the script sets it), a
// missing, stale or other-layout entry (it takes the lease), another
// process's lease, a fence, "C" (it replaces those that have no TTL, which
// the protocol never writes), and any value the protocol does not write
// (it replaces it). It returns the state, the entry of a hit, and the row
// value.
func (p *Plugin) classifySnapshot(row, gen, fence any, fp string) (readState, []byte, string) {
	if fence != nil {
		return stateBypass, nil, ""
	}
	v, _ := row.(string)
	g, ok := gen.(string)
	if !ok || v == "" {
		return stateAsk, nil, v
	}
	switch v[0] {
	case 'V':
		bar := strings.IndexByte(v, '|')
		if bar < 0 || v[1:bar] != g || len(v) < bar+1+fingerprintLen || v[bar+1:bar+1+fingerprintLen] != fp {
			return stateAsk, nil, v
		}
		entry, err := openEntry(stringBytes(v[bar+1+fingerprintLen:]))
		if err != nil {
			return stateCorrupt, nil, v
		}
		return stateHit, entry, v
	case 'N':
		if v[1:] == g {
			return stateAbsent, nil, v
		}
	case 'L':
		if p.ownLease(v) {
			return stateBypass, nil, v
		}
	}
	return stateAsk, nil, v
}

// parseRead interprets one reply of the lease script. A hit's entry is the
// reply's own bytes, past the generation and the fingerprint.
func parseRead(reply string) (readState, []byte) {
	switch {
	case reply == "G":
		return stateLeased, nil
	case reply == "X":
		return stateReplaced, nil
	case reply == "N":
		return stateAbsent, nil
	case len(reply) > 0 && reply[0] == 'V':
		bar := strings.IndexByte(reply, '|')
		if bar < 0 || len(reply) < bar+1+fingerprintLen {
			return stateCorrupt, nil
		}
		entry, err := openEntry(stringBytes(reply[bar+1+fingerprintLen:]))
		if err != nil {
			return stateCorrupt, nil
		}
		return stateHit, entry
	}
	return stateBypass, nil
}

// isLease reports whether a read reply is another reader's lease,
// "L<lease id>|<gen>".
func isLease(reply string) bool { return len(reply) > 0 && reply[0] == 'L' }

// ownLease reports whether a read reply is a lease taken by this process.
func (p *Plugin) ownLease(reply string) bool {
	return isLease(reply) && strings.HasPrefix(reply[1:], p.token)
}

// leaseIDOf extracts the lease id from a lease reply "L<id>|<gen>".
func leaseIDOf(reply string) string {
	if i := strings.IndexByte(reply, '|'); i > 1 {
		return reply[1:i]
	}
	return ""
}

// stringBytes views a string's bytes without copying. The codec contract
// forbids retaining or modifying them.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// leaseKeys runs the lease script for every key in one round trip, bounded
// by Config.ReadTimeout, and puts the replies in replies. fp is the model's
// fingerprint argument (modelInfo.fpArg).
func (p *Plugin) leaseKeys(ctx context.Context, refs []keyRef, fp any, leaseID string, replies []string) error {
	// Arguments every key of the statement shares are boxed once.
	lease, leaseMS, genMS := any(leaseID), p.leaseMSArg, p.genTTLArg()
	cmds, err := p.roundTrip(ctx, p.cfg.ReadTimeout, true, len(refs), func(ctx context.Context, s sink, i int) redis.Cmder {
		return s.Do(ctx, leaseArgs(refs[i].key, lease, leaseMS, fp, genMS)...)
	})
	if err != nil {
		return err
	}
	for i, c := range cmds {
		replies[i], _ = c.(*redis.Cmd).Text()
	}
	return nil
}

// leaseScriptSHA is the lease script's hash, boxed once.
var leaseScriptSHA any = leaseScript.Hash()

// leaseArgs is the EVALSHA command of the lease script for one key. It is
// what leaseScript.EvalSha sends, built with the arguments shared by a
// statement's keys (lease id, lease TTL, fingerprint, generation TTL) and
// by a shard's (generation and fence keys) boxed once instead of per key.
func leaseArgs(k rowKey, lease, leaseMS, fp, genMS any) []any {
	if k.shard == nil {
		return []any{"evalsha", leaseScriptSHA, 3, k.row, k.gen, k.fence, lease, leaseMS, fp, genMS}
	}
	return []any{"evalsha", leaseScriptSHA, 3, k.row, k.shard.genArg, k.shard.fenceArg, lease, leaseMS, fp, genMS}
}

// reclaim takes the lease on a key holding an entry that cannot be decoded.
func (p *Plugin) reclaim(ctx context.Context, k rowKey, entry, leaseID string) bool {
	cmds, err := p.roundTrip(ctx, p.cfg.ReadTimeout, true, 1, func(ctx context.Context, s sink, _ int) redis.Cmder {
		return reclaimScript.EvalSha(ctx, s, []string{k.row, k.gen, k.fence}, entry, leaseID, strconvMS(p.cfg.LeaseTTL), p.genTTLArg())
	})
	if err != nil {
		p.stats.redisErrors.Add(1)
		return false
	}
	r, err := cmds[0].(*redis.Cmd).Text()
	if err != nil {
		p.stats.redisErrors.Add(1)
		return false
	}
	return r == "G"
}

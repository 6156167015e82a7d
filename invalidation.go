package writethrough

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Invalidate drops the cached entries of the given models (structs, pointers
// to structs, or slices of them, with their primary keys set). Use it after
// writing rows in a way the plugin does not see — raw SQL its detector does
// not recognise (see raw.go), a trigger that writes other rows, another
// application — once that write has committed. Readers use the database for
// Config.ContendedTTL, then fill again.
func (p *Plugin) Invalidate(ctx context.Context, models ...any) error {
	var keys []string
	for _, m := range models {
		mi, err := p.modelOf(m)
		if err != nil {
			return err
		}
		if !mi.cached {
			continue
		}
		for _, r := range p.modelKeys(ctx, mi, reflect.ValueOf(m)) {
			keys = append(keys, r.key.row)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if err := p.poison(ctx, keys); err != nil {
		return fmt.Errorf("writethrough: invalidate: %w", err)
	}
	return nil
}

// InvalidateTable drops every cached entry of model's table at once, in one
// round trip whatever the table's size, and with no cost on the read path:
// it bumps the generation that every entry of the table is checked against.
func (p *Plugin) InvalidateTable(ctx context.Context, model any) error {
	mi, err := p.modelOf(model)
	if err != nil {
		return err
	}
	if err := p.bump(ctx, genKeys(mi.allShards(p))); err != nil {
		return fmt.Errorf("writethrough: invalidate table %s: %w", mi.schema.Table, err)
	}
	return nil
}

// dirtyKeys are keys whose writes committed without a fence (policy
// Available, Redis unreachable). Until their invalidation lands, this
// process reads them from the database; a background loop retries.
//
// The queue holds at most max keys (Config.MaxQueuedInvalidations). When
// more would be queued, every queued key is replaced by its table: the
// loop then bumps every shard of those tables, and reads of any of their
// rows use the database until it has. Memory is then one entry per table.
// The queue lives in this process only: a crash loses it (see README).
type dirtyKeys struct {
	n       atomic.Int64 // fast path: zero means nothing is dirty
	mu      sync.Mutex
	keys    map[string]struct{} // row keys and shard generation keys
	tables  map[string]struct{} // tables invalidated whole, by tableOf
	max     int
	running bool
}

func (d *dirtyKeys) init(max int) {
	d.keys, d.tables, d.max = map[string]struct{}{}, map[string]struct{}{}, max
}

// contains reports whether any row (or its shard, or its table) of refs is
// dirty.
func (d *dirtyKeys) contains(refs []keyRef) bool {
	if d.n.Load() == 0 {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range refs {
		if _, ok := d.keys[r.key.row]; ok {
			return true
		}
		if _, ok := d.keys[r.key.gen]; ok {
			return true
		}
		if len(d.tables) > 0 {
			if _, ok := d.tables[tableOf(r.key.gen)]; ok {
				return true
			}
		}
	}
	return false
}

// add queues keys, falling back to their tables when the queue would
// outgrow its bound. Called with mu held.
func (d *dirtyKeys) add(keys []string) (overflowed bool) {
	if len(d.keys)+len(keys) <= d.max {
		for _, k := range keys {
			d.keys[k] = struct{}{}
		}
	} else {
		for k := range d.keys {
			d.tables[tableOf(k)] = struct{}{}
		}
		for _, k := range keys {
			d.tables[tableOf(k)] = struct{}{}
		}
		clear(d.keys)
		overflowed = true
	}
	d.n.Store(int64(len(d.keys) + len(d.tables)))
	return overflowed
}

// tableOf returns the part of a row or shard key that names its table,
// "<prefix>:{<table>", the same for every shard. The first '}' of a key
// closes its hash tag (the prefix has none, the table is escaped), and the
// shard number follows the last ':' before it.
func tableOf(key string) string {
	end := strings.IndexByte(key, '}')
	if end < 0 {
		return key
	}
	if i := strings.LastIndexByte(key[:end], ':'); i >= 0 {
		return key[:i]
	}
	return key
}

// shardGenKeys lists the generation keys of every shard of a table named
// by tableOf.
func (p *Plugin) shardGenKeys(table string) []string {
	out := make([]string, p.cfg.TableShards)
	for i := range out {
		out[i] = table + ":" + strconv.Itoa(i) + "}:g"
	}
	return out
}

// queueInvalidation marks keys dirty and makes sure the retry loop runs.
func (p *Plugin) queueInvalidation(keys []string, cause error) {
	if len(keys) == 0 {
		return
	}
	p.cfg.Logger.Warn("writethrough: write committed without fencing its keys (policy available); invalidating them once Redis answers", "keys", len(keys), "error", cause)
	d := &p.dirty
	d.mu.Lock()
	if d.add(keys) {
		p.cfg.Logger.Warn("writethrough: invalidation queue full (Config.MaxQueuedInvalidations); invalidating the queued keys' tables whole instead", "tables", len(d.tables))
	}
	start := !d.running
	d.running = true
	d.mu.Unlock()
	if start {
		go p.invalidateLoop()
	}
}

// invalidateLoop retries the queued invalidations until they all land.
func (p *Plugin) invalidateLoop() {
	d := &p.dirty
	delay := 10 * time.Millisecond
	for {
		d.mu.Lock()
		keys := make([]string, 0, len(d.keys))
		for k := range d.keys {
			keys = append(keys, k)
		}
		tables := make([]string, 0, len(d.tables))
		for t := range d.tables {
			tables = append(tables, t)
		}
		if len(keys) == 0 && len(tables) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()

		send := keys
		for _, t := range tables {
			send = append(send, p.shardGenKeys(t)...)
		}
		if err := p.poison(context.Background(), send); err != nil {
			p.stats.redisErrors.Add(1)
			time.Sleep(delay)
			delay = min(delay*2, time.Second)
			continue
		}
		d.mu.Lock()
		for _, k := range keys {
			delete(d.keys, k)
		}
		for _, t := range tables {
			delete(d.tables, t)
		}
		d.n.Store(int64(len(d.keys) + len(d.tables)))
		d.mu.Unlock()
		delay = 10 * time.Millisecond
	}
}

package writethrough

import (
	"context"
	"fmt"
	"reflect"
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
type dirtyKeys struct {
	n       atomic.Int64 // fast path: zero means nothing is dirty
	mu      sync.Mutex
	keys    map[string]struct{}
	running bool
}

func (d *dirtyKeys) init() { d.keys = map[string]struct{}{} }

// contains reports whether any row (or its shard) of refs is dirty.
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
	}
	return false
}

// queueInvalidation marks keys dirty and makes sure the retry loop runs.
func (p *Plugin) queueInvalidation(keys []string, cause error) {
	if len(keys) == 0 {
		return
	}
	p.cfg.Logger.Warn("writethrough: write committed without fencing its keys (policy available); invalidating them once Redis answers", "keys", len(keys), "error", cause)
	d := &p.dirty
	d.mu.Lock()
	for _, k := range keys {
		d.keys[k] = struct{}{}
	}
	d.n.Store(int64(len(d.keys)))
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
		if len(keys) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()

		if err := p.poison(context.Background(), keys); err != nil {
			p.stats.redisErrors.Add(1)
			time.Sleep(delay)
			delay = min(delay*2, time.Second)
			continue
		}
		d.mu.Lock()
		for _, k := range keys {
			delete(d.keys, k)
		}
		d.n.Store(int64(len(d.keys)))
		d.mu.Unlock()
		delay = 10 * time.Millisecond
	}
}

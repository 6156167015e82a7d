package writethrough

import (
	"context"
	"sync"
	"time"
)

// flights keeps N concurrent misses on one key in one process down to one
// database query. A statement registers its lease id before asking Redis;
// another statement of this process that then finds that lease on the key
// waits for the first one's fill and uses what it stored. A stored fill is
// as fresh as a read that starts before it lands (any write fenced in
// between would have replaced the lease and failed the fill), so the waiter
// never gets a state older than its own start.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight // by lease id
	// Ended flights that stored something stay findable for a while: a
	// statement that saw the lease just before the fill landed, but looks
	// the flight up after it ended, still uses what was stored (it is as
	// fresh for it as for a waiter that came in time) instead of querying
	// the database. Two generations, rotated every keepEnded.
	recent, old map[string]*flight
	rotated     time.Time
}

// keepEnded bounds how long an ended flight's fills stay findable.
const keepEnded = time.Second

// flight is one statement's pending fills. Most statements are hits that
// nobody waits for, so the channel waiters block on is made by the first
// waiter, not by start.
type flight struct {
	leaseID string
	mu      sync.Mutex
	done    chan struct{} // made by the first waiter, closed by end
	ended   bool
	results map[string]flightResult
}

type flightResult struct {
	entry  []byte
	absent bool
}

// start registers a statement's lease id.
func (fs *flights) start(leaseID string) *flight {
	f := &flight{leaseID: leaseID}
	fs.mu.Lock()
	if fs.m == nil {
		fs.m = map[string]*flight{}
	}
	fs.m[leaseID] = f
	fs.mu.Unlock()
	return f
}

// end unregisters a statement and wakes its waiters.
func (fs *flights) end(f *flight) {
	f.mu.Lock()
	stored := len(f.results) > 0
	f.mu.Unlock()
	fs.mu.Lock()
	delete(fs.m, f.leaseID)
	if now := time.Now(); now.Sub(fs.rotated) > keepEnded {
		fs.old, fs.recent, fs.rotated = fs.recent, nil, now
	}
	if stored {
		if fs.recent == nil {
			fs.recent = map[string]*flight{}
		}
		fs.recent[f.leaseID] = f
	}
	fs.mu.Unlock()
	f.mu.Lock()
	f.ended = true
	if f.done != nil {
		close(f.done)
	}
	f.mu.Unlock()
}

// publish records a successful fill for waiters.
func (f *flight) publish(row string, entry []byte, absent bool) {
	f.mu.Lock()
	if f.results == nil {
		f.results = map[string]flightResult{}
	}
	f.results[row] = flightResult{entry: entry, absent: absent}
	f.mu.Unlock()
}

// wait waits for the statement holding leaseID on row to finish, and
// returns what it stored there, if anything.
func (fs *flights) wait(ctx context.Context, row, leaseID string, limit time.Duration) (entry []byte, absent, ok bool) {
	fs.mu.Lock()
	f := fs.m[leaseID]
	if f == nil {
		f = fs.recent[leaseID]
	}
	if f == nil {
		f = fs.old[leaseID]
	}
	fs.mu.Unlock()
	if f == nil {
		return nil, false, false
	}
	f.mu.Lock()
	if !f.ended && f.done == nil {
		f.done = make(chan struct{})
	}
	done, ended := f.done, f.ended
	f.mu.Unlock()
	if !ended {
		t := time.NewTimer(limit)
		defer t.Stop()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, false, false
		case <-t.C:
			return nil, false, false
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.results[row]
	if !ok {
		return nil, false, false
	}
	// the entry was sealed for Redis: strip the checksum as a reply would be
	body, err := openEntry(r.entry)
	if r.absent {
		return nil, true, true
	}
	if err != nil {
		return nil, false, false
	}
	return body, false, true
}

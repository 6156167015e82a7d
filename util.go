package writethrough

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"time"
)

// randomToken returns a process-unique prefix for lease ids and fence
// tokens, so that processes sharing a Redis never mistake each other's.
func randomToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newToken returns a fresh lease id or fence token: the process prefix and
// a counter.
func (p *Plugin) newToken() string {
	n := p.seq.Add(1)
	b := make([]byte, 0, len(p.token)+12)
	b = append(b, p.token...)
	b = append(b, '.')
	b = strconv.AppendUint(b, n, 36)
	return string(b)
}

// strconvMS formats a duration as whole milliseconds, at least 1.
func strconvMS(d time.Duration) string {
	ms := d.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return strconv.FormatInt(ms, 10)
}

// parseMS reads what strconvMS wrote.
func parseMS(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// testHooks lets tests stop the protocol at exact points to force a race.
// It is nil in production.
type testHooks struct {
	beforeQuery  func(row string) // a lookup missed and is about to read the database
	beforeFill   func(row string) // a lookup read the database and is about to fill
	afterCommit  func()           // COMMIT returned; the finish is not sent yet
	beforeFinish func() bool      // return false to skip the finish (a crash)
	afterFence   func()           // an auto-commit statement fenced its keys; its SQL has not run
}

// Broker limits: token buckets for sends (per member) and handshakes (per
// client IP), and a cap on sockets waiting for their handshake (per IP).
// Policy: a bucket holds `burst` tokens and refills `perMinute` tokens a
// minute; an empty bucket refuses with a rate_limit error that says the
// limit, so a client can tell a retryable refusal from a permanent one. An
// address holding MaxPendingPerIP sockets that have not said hello gets
// 429 before any upgrade; from half that many on, its new sockets get the
// shorter HelloTimeoutUnderPressure, so idle sockets cannot pin memory.
package main

import "time"

// tokenBucket is a classic token bucket. It is not safe for concurrent use;
// the broker guards its buckets with its mutex.
type tokenBucket struct {
	tokens   float64
	burst    float64
	perSec   float64
	last     time.Time
	lastUsed time.Time
}

// takeToken spends a token from key's bucket in buckets, making a full
// bucket for a key it has not seen. Caller holds b.mu.
func takeToken(buckets map[string]*tokenBucket, key string, burst, perMinute int, now time.Time) bool {
	tb := buckets[key]
	if tb == nil {
		tb = newTokenBucket(burst, perMinute, now)
		buckets[key] = tb
	}
	return tb.take(now)
}

func newTokenBucket(burst, perMinute int, now time.Time) *tokenBucket {
	return &tokenBucket{tokens: float64(burst), burst: float64(burst), perSec: float64(perMinute) / 60, last: now, lastUsed: now}
}

// take spends one token if there is one.
func (tb *tokenBucket) take(now time.Time) bool {
	if dt := now.Sub(tb.last).Seconds(); dt > 0 {
		tb.tokens = min(tb.burst, tb.tokens+dt*tb.perSec)
		tb.last = now
	}
	tb.lastUsed = now
	if tb.tokens < 1 {
		return false
	}
	tb.tokens--
	return true
}

// refund gives back a token spent on something that turned out free (a
// duplicate send).
func (tb *tokenBucket) refund() {
	tb.tokens = min(tb.burst, tb.tokens+1)
}

// idle reports whether the bucket has gone unused for longer than after
// (by then it has refilled), so that it can be dropped.
func (tb *tokenBucket) idle(now time.Time, after time.Duration) bool {
	return now.Sub(tb.lastUsed) > after
}

// admitPending counts a new socket of ip that has not yet said hello, and
// returns its hello deadline; false when ip is at its cap. Release it with
// leavePending.
func (b *Broker) admitPending(ip string) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.pendingByIP[ip]
	if n >= b.opts.MaxPendingPerIP {
		return 0, false
	}
	b.pendingByIP[ip] = n + 1
	if 2*n >= b.opts.MaxPendingPerIP {
		return b.opts.HelloTimeoutUnderPressure, true
	}
	return b.opts.HelloTimeout, true
}

// leavePending releases a socket counted by admitPending: it said hello,
// or it ended.
func (b *Broker) leavePending(ip string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pendingByIP[ip] <= 1 {
		delete(b.pendingByIP, ip)
	} else {
		b.pendingByIP[ip]--
	}
}

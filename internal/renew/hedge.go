package renew

import (
	"context"
	"log/slog"
	"time"

	"github.com/hashicorp/vault/api"
)

// maxInFlight is how many requests hedged keeps waiting at once: one more
// than the one a hung node holds. More, in a cluster that is slow rather
// than hung, only add to its load: every sidecar's requests pile up on
// the node taking over.
const maxInFlight = 2

// hedged sends a Vault request that is safe to send more than once (a
// renewal) about a credential that ends at expiry (zero: no end), through
// client c, and lets it wait for Vault's answer for requestBudget. A
// renewal cut short is lost work, and a busy Vault, or a new active node
// taking over, answers in seconds. But a node that never answers (a hung
// one, or a connection a partition swallowed) must not take all that
// time: each time a request has had attemptTimeout without an answer,
// the same request goes out once more beside those waiting, through hedge
// (nil: never), a client that opens a connection of its own for every
// request, which a load balancer may send to another node: at most
// maxInFlight requests, each with at least attemptMin before the budget
// ends, none of them cut short.
//
// The first success is the answer, and the others are cancelled. An error
// that comes while one request has gone out is returned at once (the
// caller's retry policy handles it); after that, an error waits for the
// other requests' answers. Of several errors, the last one that came
// before the budget ran out is returned (Vault's word rather than the
// client giving up), else the last one. The token c carries is set on
// hedge before use: only the loop goroutine calls hedged, one call at a
// time. Each further request is logged (what names the request, attrs
// what it is about).
func hedged[T any](ctx context.Context, log *slog.Logger, what string, attrs []any, expiry time.Time, c, hedge *api.Client, op func(context.Context, *api.Client) (T, error)) (T, error) {
	now := time.Now()
	deadline := now.Add(requestBudget(now, expiry))
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	results := make(chan result, maxInFlight) // never blocks a request that ends after hedged returned
	send := func(c *api.Client) {
		v, err := op(ctx, c)
		results <- result{v, err}
	}
	go send(c)
	sent, pending := 1, 1
	var timer *time.Timer
	var next <-chan time.Time // nil: no further request
	arm := func(now time.Time) {
		next = nil
		if d := attemptTimeout(now, expiry); hedge != nil && sent < maxInFlight && deadline.Sub(now.Add(d)) >= attemptMin {
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			next = timer.C
		}
	}
	arm(now)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var last result
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err == nil || sent == 1 {
				return r.v, r.err
			}
			if last.err == nil || ctx.Err() == nil {
				last = r
			}
		case <-next:
			log.Warn("no answer from Vault yet: sending the "+what+" again on a new connection, the first still waiting",
				append(attrs, "waited", time.Since(now).Round(time.Millisecond), "requests", sent+1, "expires_in", until(time.Now(), expiry))...)
			hedge.SetToken(c.Token())
			go send(hedge)
			sent++
			pending++
			arm(time.Now())
		}
	}
	return last.v, last.err
}

package main

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"time"
)

// app is the demo's application: every second it reads the credential
// file, as an app that re-reads it for each new connection would, and
// runs a query with it.
type app struct {
	demo *demo
	file string

	mu         sync.Mutex
	ok, failed int
	seen       []string
	lastReport time.Time
}

func (a *app) loop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		a.query(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (a *app) query(ctx context.Context) {
	var cred struct{ Username, Password string }
	b, err := os.ReadFile(a.file)
	if err == nil {
		err = json.Unmarshal(b, &cred)
	}
	if err == nil {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		conn, cerr := a.demo.bed.PGConnect(qctx, cred.Username, cred.Password)
		if err = cerr; err == nil {
			var n int
			err = conn.QueryRow(qctx, "SELECT count(*) FROM items").Scan(&n)
			conn.Close(ctx)
		}
	}
	if ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.failed++
		a.demo.say("app", "query FAILED: %v", err)
		return
	}
	a.ok++
	if len(a.seen) == 0 || a.seen[len(a.seen)-1] != cred.Username {
		a.seen = append(a.seen, cred.Username)
		a.demo.say("app", "query ok as %s (a new credential)", cred.Username)
		a.lastReport = time.Now()
	} else if time.Since(a.lastReport) >= 5*time.Second {
		a.demo.say("app", "query ok as %s (%d queries so far, %d failed)", cred.Username, a.ok, a.failed)
		a.lastReport = time.Now()
	}
}

func (a *app) counts() (ok, failed int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ok, a.failed
}

func (a *app) users() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

func (a *app) userList() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

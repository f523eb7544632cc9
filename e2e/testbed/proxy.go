package testbed

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 that tests put between a client and a
// server (usually Vault) to simulate outages.
type Proxy struct {
	target string
	addr   string

	mu     sync.Mutex
	ln     net.Listener // nil while cut
	mode   proxyMode
	conns  connSet
	closed bool
	wg     sync.WaitGroup
}

type proxyMode int

const (
	forwarding proxyMode = iota
	cut                  // listener closed: connection refused
	blackhole            // connections accepted, nothing answers
)

// NewProxy starts a proxy to target (host:port) on a free port.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{target: target, addr: ln.Addr().String(), ln: ln}
	p.serve(ln)
	return p, nil
}

// Addr is the proxy's host:port; "http://" + Addr() is a VAULT_ADDR.
func (p *Proxy) Addr() string { return p.addr }

// Cut closes every open connection and stops listening, so new
// connections are refused, as when the server is down.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.mode = cut
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.conns.closeAll(false)
}

// Blackhole closes every open connection and then accepts new ones but
// never answers, as behind a network partition: clients wait for their
// timeouts.
func (p *Proxy) Blackhole() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("proxy closed")
	}
	p.conns.closeAll(false)
	p.mode = blackhole
	return p.listenLocked()
}

// Restore forwards again after Cut or Blackhole. Connections held by
// Blackhole are closed. It fails only if the proxy's port was taken while
// it was cut.
func (p *Proxy) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("proxy closed")
	}
	if p.mode == blackhole {
		p.conns.closeAll(false)
	}
	p.mode = forwarding
	return p.listenLocked()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.conns.closeAll(true)
	p.mu.Unlock()
	p.wg.Wait()
}

// listenLocked listens on the proxy's address again if Cut closed it.
func (p *Proxy) listenLocked() error {
	if p.ln != nil {
		return nil
	}
	var ln net.Listener
	var err error
	// The kernel may hold the port briefly after the old listener closed.
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("proxy listen again on %s: %w", p.addr, err)
	}
	p.ln = ln
	p.serve(ln)
	return nil
}

func (p *Proxy) serve(ln net.Listener) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed by Cut or Close
			}
			p.mu.Lock()
			mode := p.mode
			p.mu.Unlock()
			if mode == cut {
				c.Close() // accepted just before Cut closed the listener
				continue
			}
			if !p.conns.add(c) {
				c.Close()
				return
			}
			if mode == blackhole {
				continue // held open, never read, until Restore or Close
			}
			p.wg.Add(1)
			go p.forward(c)
		}
	}()
}

func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	defer p.conns.remove(client)
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	splice(&p.conns, client, server)
}

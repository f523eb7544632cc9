package testbed

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Balancer is a TCP load balancer on 127.0.0.1 over a Cluster's nodes, as
// a Kubernetes Service over Vault's pods is: each new connection goes to
// the next node in rotation (round robin), and a node whose port refuses
// the connection is skipped for the next one, as when its endpoint has
// been removed. A node is in rotation while unsealed (Vault's pods are
// ready while unsealed), so standbys get their share of requests and
// forward them to the active node.
type Balancer struct {
	ln    net.Listener
	nodes []*ClusterNode

	mu    sync.Mutex
	in    map[*ClusterNode]bool
	next  int
	conns connSet
	wg    sync.WaitGroup
}

// NewBalancer starts a balancer over nodes, all in rotation.
func NewBalancer(nodes []*ClusterNode) (*Balancer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("balancer listen: %w", err)
	}
	b := &Balancer{ln: ln, nodes: nodes, in: map[*ClusterNode]bool{}}
	for _, n := range nodes {
		b.in[n] = true
	}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

// Addr is the balancer's host:port.
func (b *Balancer) Addr() string { return b.ln.Addr().String() }

// SetInRotation puts n in or out of rotation; connections already open to
// it stay open.
func (b *Balancer) SetInRotation(n *ClusterNode, in bool) {
	b.mu.Lock()
	b.in[n] = in
	b.mu.Unlock()
}

// Close stops the balancer and closes every connection.
func (b *Balancer) Close() {
	b.ln.Close()
	b.conns.closeAll(true)
	b.wg.Wait()
}

// candidates returns the nodes in rotation, starting with the next one.
func (b *Balancer) candidates() []*ClusterNode {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*ClusterNode
	for i := range b.nodes {
		n := b.nodes[(b.next+i)%len(b.nodes)]
		if b.in[n] {
			out = append(out, n)
		}
	}
	b.next = (b.next + 1) % len(b.nodes)
	return out
}

func (b *Balancer) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		if !b.conns.add(c) {
			c.Close()
			return
		}
		b.wg.Add(1)
		go b.forward(c)
	}
}

func (b *Balancer) forward(client net.Conn) {
	defer b.wg.Done()
	defer b.conns.remove(client)
	for _, n := range b.candidates() {
		if server, err := net.DialTimeout("tcp", n.HostPort, 2*time.Second); err == nil {
			splice(&b.conns, client, server)
			return
		}
	}
	client.Close() // no node took it: the client sees its connection closed
}

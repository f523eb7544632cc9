package testbed

import (
	"io"
	"net"
	"testing"
)

// TestBalancer: connections go round robin to the nodes in rotation, and
// past a node that refuses them.
func TestBalancer(t *testing.T) {
	t.Parallel()
	serve := func(name string) *ClusterNode {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, name)
				c.Close()
			}
		}()
		return &ClusterNode{Name: name, HostPort: ln.Addr().String()}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := &ClusterNode{Name: "dead", HostPort: ln.Addr().String()}
	ln.Close()
	a, b, c := serve("a"), serve("b"), serve("c")
	lb, err := NewBalancer([]*ClusterNode{a, dead, b, c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lb.Close)
	lb.SetInRotation(c, false)
	got := map[string]int{}
	for range 40 {
		conn, err := net.Dial("tcp", lb.Addr())
		if err != nil {
			t.Fatal(err)
		}
		name, _ := io.ReadAll(conn)
		conn.Close()
		got[string(name)]++
	}
	if got["c"] != 0 || got[""] != 0 || got["a"] < 10 || got["b"] < 10 {
		t.Errorf("connections per node: %v; want a and b about evenly, none to c (out of rotation), none unanswered (dead is skipped)", got)
	}
}

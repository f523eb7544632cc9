package testbed

import (
	"io"
	"net"
	"sync"
)

// connSet is the open connections of a proxy or balancer, so that closing
// it can close them all.
type connSet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	shut  bool
}

// add registers c; false, with c not added, once the set is shut.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeAll closes every connection in the set; with shut, it also takes
// no more.
func (s *connSet) closeAll(shut bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shut = s.shut || shut
	for c := range s.conns {
		c.Close()
	}
	clear(s.conns)
}

// splice copies between client and server both ways until both
// directions end, passing a half-close on so that an HTTP client sees
// the end of a response, and then closes both; both are in set until
// then. It closes client alone if set is shut.
func splice(set *connSet, client, server net.Conn) {
	defer client.Close()
	defer server.Close()
	if !set.add(server) {
		return
	}
	defer set.remove(server)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	<-done
}

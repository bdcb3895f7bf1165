//go:build faults

package faults

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP proxy between a gRPC client and its server that can lose
// the server's answers: while swallowing it still forwards everything the
// client sends (so the server receives and commits), and throws away
// everything the server sends back. Cut closes every connection.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	swallow bool
	closed  bool

	// onAnswer, when set, sees every chunk the server sends before it is
	// forwarded; returning false swallows the chunk.
	onAnswer atomic.Pointer[func([]byte) bool]

	swallowed atomic.Int64 // bytes thrown away
	accepted  atomic.Int64 // connections
}

// newProxy listens on a free port and forwards to target.
func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Swallow starts losing the server's answers.
func (p *Proxy) Swallow() {
	p.mu.Lock()
	p.swallow = true
	p.mu.Unlock()
}

// CutAndRestore closes every connection and, in the same step, stops
// swallowing: connections made afterwards work normally. It returns the
// number of connections cut.
func (p *Proxy) CutAndRestore() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		_ = c.Close()
	}
	p.swallow = false
	return n
}

// OnAnswer installs (or, with nil, removes) the hook on server chunks.
func (p *Proxy) OnAnswer(f func([]byte) bool) {
	if f == nil {
		p.onAnswer.Store(nil)
		return
	}
	p.onAnswer.Store(&f)
}

// Close stops listening and cuts every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.CutAndRestore()
}

func (p *Proxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		go p.handle(client)
	}
}

func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
		_ = c.Close()
	}
}

func (p *Proxy) handle(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	if !p.track(client, server) {
		_ = client.Close()
		_ = server.Close()
		return
	}
	defer p.untrack(client, server)
	go func() {
		// Client to server: always forwarded.
		_, _ = io.Copy(server, client)
		p.untrack(client, server)
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			forward := true
			if hook := p.onAnswer.Load(); hook != nil {
				forward = (*hook)(buf[:n])
			}
			p.mu.Lock()
			swallow := p.swallow
			p.mu.Unlock()
			if !forward || swallow {
				p.swallowed.Add(int64(n))
			} else if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

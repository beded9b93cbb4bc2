// Package faultproxy is a TCP forwarder for fault tests: it sits between a
// process and its Redis and can cut the path silently, the way a dead
// switch or a dropped route does, with no RST and no FIN, while both
// sockets stay open.
//
// During a partition the proxy still reads what each side sends but holds
// it: bytes (and a close) reach the other side only after Heal, as TCP's
// retransmissions would deliver them once the path is back. A connection
// made during the partition is accepted (a real partition would leave the
// SYN unanswered; either way the dialer's commands hang) and its traffic is
// held like the rest.
package faultproxy

import (
	"net"
	"sync"
	"sync/atomic"
)

// Proxy forwards every connection made to Addr to the target. Its methods
// are safe for concurrent use. Close stops it and waits for every goroutine
// it started.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex // guards conns, healed, closed
	conns  map[net.Conn]*pair
	healed chan struct{} // closed while forwarding; open during a partition
	closed bool

	wg sync.WaitGroup // the accept loop and every pump
}

// Start listens on a free loopback port and forwards to target (host:port).
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]*pair{}, healed: make(chan struct{})}
	close(p.healed)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Partition stops forwarding in both directions; sockets stay open and
// nothing is sent to either side (no RST, no FIN) until Heal.
func (p *Proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.healed:
		p.healed = make(chan struct{})
	default: // already partitioned
	}
}

// Heal forwards again, starting with what was held.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.healed:
	default:
		close(p.healed)
	}
}

// HealForgetting heals the path for new connections, while every
// connection open now stays silent for good, as when a NAT or firewall on
// the path lost its state during the partition and drops the old flows'
// packets (no RST): what was held and whatever either side sends on them
// later is dropped. Only the dialer's own timeouts end them.
func (p *Proxy) HealForgetting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.conns {
		pr.lost.Store(true)
	}
	select {
	case <-p.healed:
	default:
		close(p.healed)
	}
}

// Conns is the number of client connections currently open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

// Close stops listening, closes every connection and waits for the pumps.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	select {
	case <-p.healed:
	default:
		close(p.healed) // release pumps holding data
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close() // target down: like a refused connection
			continue
		}
		pr := &pair{}
		if !p.track(client, server, pr) {
			return
		}
		p.wg.Add(2)
		go p.pump(server, client, pr)
		go p.pump(client, server, pr)
	}
}

// pair is one forwarded connection (client and server socket).
type pair struct {
	lost atomic.Bool // set by HealForgetting: never forward again
}

// track records both sockets; it reports false (closing them) once the
// proxy is closed.
func (p *Proxy) track(a, b net.Conn, pr *pair) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = a.Close()
		_ = b.Close()
		return false
	}
	p.conns[a], p.conns[b] = pr, pr
	return true
}

func (p *Proxy) untrack(a, b net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, a)
	delete(p.conns, b)
}

// wait blocks while partitioned; it reports false once the proxy is closed.
func (p *Proxy) wait() bool {
	p.mu.Lock()
	ch := p.healed
	p.mu.Unlock()
	<-ch
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed
}

// pump copies src to dst, holding each chunk (and the end of src) while
// partitioned. When src ends, dst is closed too, once the path is healed.
// On a lost pair it drops everything and passes no end on: the other side's
// socket stays open until Close.
func (p *Proxy) pump(dst, src net.Conn, pr *pair) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, rerr := src.Read(buf)
		if !p.wait() {
			return
		}
		if pr.lost.Load() {
			if rerr != nil {
				return
			}
			continue
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				rerr = werr
			}
		}
		if rerr != nil {
			// EOF, a reset or our own Close: either way pass the end on.
			_ = dst.Close()
			_ = src.Close()
			p.untrack(dst, src)
			return
		}
	}
}

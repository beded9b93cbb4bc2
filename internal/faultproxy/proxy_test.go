package faultproxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo serves one line-echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

func readLine(t *testing.T, c net.Conn, r *bufio.Reader, within time.Duration) (string, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	return r.ReadString('\n')
}

// A partition holds bytes both ways without closing anything; Heal delivers
// what was held, in order, on the same connection.
func TestPartitionHoldsThenHeals(t *testing.T) {
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := c.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := readLine(t, c, r, 5*time.Second); err != nil || l != "a\n" {
		t.Fatalf("before the partition: %q %v", l, err)
	}

	p.Partition()
	if _, err := c.Write([]byte("b\n")); err != nil {
		t.Fatal(err)
	}
	// Silence, not a close: the read times out (no EOF, no reset).
	_, err = readLine(t, c, r, 300*time.Millisecond)
	var ne net.Error
	if ne, _ = err.(net.Error); ne == nil || !ne.Timeout() {
		t.Fatalf("during the partition: %v, want a timeout", err)
	}
	// A connection made meanwhile is silent too.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	r2 := bufio.NewReader(c2)
	_, _ = c2.Write([]byte("c\n"))
	if _, err := readLine(t, c2, r2, 300*time.Millisecond); err == nil {
		t.Fatal("a new connection was answered during the partition")
	}

	p.Heal()
	if l, err := readLine(t, c, r, 5*time.Second); err != nil || l != "b\n" {
		t.Fatalf("after heal: %q %v", l, err)
	}
	if l, err := readLine(t, c2, r2, 5*time.Second); err != nil || l != "c\n" {
		t.Fatalf("new connection after heal: %q %v", l, err)
	}
}

// A client that gives up during a partition: its close reaches the server
// only after Heal, and Close leaves no goroutine behind while partitioned.
func TestCloseWhilePartitioned(t *testing.T) {
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	waitConns(t, p, 1)
	p.Partition()
	_, _ = c.Write([]byte("held\n"))
	_ = c.Close()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// HealForgetting: the old connection stays silent for good (what was held
// is dropped), a new one is forwarded.
func TestHealForgetting(t *testing.T) {
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	waitConns(t, p, 1)
	p.Partition()
	_, _ = c.Write([]byte("held\n"))
	p.HealForgetting()
	_, _ = c.Write([]byte("after\n"))
	if l, err := readLine(t, c, r, 300*time.Millisecond); err == nil {
		t.Fatalf("the forgotten connection got %q", l)
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, _ = c2.Write([]byte("new\n"))
	if l, err := readLine(t, c2, bufio.NewReader(c2), 5*time.Second); err != nil || l != "new\n" {
		t.Fatalf("new connection after HealForgetting: %q %v", l, err)
	}
}

// waitConns waits until the proxy has accepted n connections.
func waitConns(t *testing.T, p *Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Conns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections through the proxy, want %d", p.Conns(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/notifybridge/notifybridge/config"
	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// The nginx example of docs/deploy.md, tested: a real nginx runs a rendered
// copy of deploy/nginx/notifybridge.conf (upstream address, listen ports and
// certificate paths replaced, nothing else) in front of a real node, and a
// WebSocket client connects through it over TLS.

const nginxConf = "../deploy/nginx/notifybridge.conf"

// render returns the committed config with the environment-specific lines
// replaced. Each replaced line must occur exactly once, so the test fails
// when the committed config drifts from what it checks.
func render(t *testing.T, upstream string, httpPort, httpsPort int, cert, key string, more ...string) string {
	t.Helper()
	raw, err := os.ReadFile(nginxConf)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(raw)
	repl := []string{
		"server 127.0.0.1:8080;", "server " + upstream + ";",
		"listen 80;", "listen 127.0.0.1:" + strconv.Itoa(httpPort) + ";",
		"listen [::]:80;", "",
		"listen 443 ssl;", "listen 127.0.0.1:" + strconv.Itoa(httpsPort) + " ssl;",
		"listen [::]:443 ssl;", "",
		"/etc/ssl/certs/app.example.com.pem;", cert + ";",
		"/etc/ssl/private/app.example.com.key;", key + ";",
	}
	repl = append(repl, more...)
	for i := 0; i < len(repl); i += 2 {
		if n := strings.Count(conf, repl[i]); n != 1 {
			t.Fatalf("%s: %q occurs %d times, want once", nginxConf, repl[i], n)
		}
		conf = strings.Replace(conf, repl[i], repl[i+1], 1)
	}
	return conf
}

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

// startNginx runs nginx in the foreground with server (the rendered
// notifybridge.conf) inside a minimal main config, and stops it when the
// test ends.
func startNginx(t *testing.T, dir, server string, httpsPort int) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil { // Debian's is in /usr/sbin, off a non-root PATH
		bin, err = exec.LookPath("/usr/sbin/nginx")
	}
	if err != nil {
		t.Fatalf("nginx not found (install it: apt-get install nginx, or scripts/install-deps.sh): %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notifybridge.conf"), []byte(server), 0o600); err != nil {
		t.Fatal(err)
	}
	main := "worker_processes 1;\nevents { worker_connections 256; }\nhttp {\n" +
		"    access_log off;\n"
	for _, p := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		main += "    " + p + "_temp_path " + filepath.Join(dir, p) + ";\n"
	}
	main += "    include " + filepath.Join(dir, "notifybridge.conf") + ";\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &e2e.SyncBuffer{}
	cmd := exec.Command(bin, "-p", dir+"/", "-c", filepath.Join(dir, "nginx.conf"),
		"-g", "daemon off; master_process off; pid "+filepath.Join(dir, "nginx.pid")+"; error_log stderr;")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("nginx output:\n%s", e2e.LastLines(out.String(), 40))
		}
	})
	e2e.WaitFor(t, 10*time.Second, "nginx listening", func() error {
		select {
		case <-done:
			return fmt.Errorf("nginx exited:\n%s", out.String())
		default:
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(httpsPort))
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// tlsFront listens on a plain loopback port and forwards every connection
// over verified TLS to nginx: the public address a browser would use (its
// Host and Origin name this port), so e2e.Dial can talk wss through it.
func tlsFront(t *testing.T, ln net.Listener, nginxAddr string, pool *x509.CertPool) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				u, err := tls.Dial("tcp", nginxAddr, cfg)
				if err != nil {
					t.Logf("tls to nginx: %v", err)
					return
				}
				defer u.Close()
				stop := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(u, c); stop <- struct{}{} }()
				go func() { _, _ = io.Copy(c, u); stop <- struct{}{} }()
				<-stop
				_ = c.Close()
				_ = u.Close()
				<-stop
			}()
		}
	}()
}

type proxy struct {
	Public string // host:port clients dial; Origin https://<Public>
	conf   string
}

// front reserves the public address, before the node starts (so a node can
// list its origin in allowed_origins).
func front(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// startProxy runs nginx with the committed config (plus the replacements in
// more) in front of upstream, reachable at the public address ln.
func startProxy(t *testing.T, ln net.Listener, upstream string, more ...string) proxy {
	t.Helper()
	return startProxyStreams(t, ln, upstream, nil, more...)
}

// startProxyStreams is startProxy with replacements in the included
// notifybridge-streams.inc too.
func startProxyStreams(t *testing.T, ln net.Listener, upstream string, streamsMore []string, more ...string) proxy {
	t.Helper()
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir)
	httpPort, httpsPort := redistest.FreePort(t), redistest.FreePort(t)
	conf := render(t, upstream, httpPort, httpsPort, cert, key, more...)
	conf = includeStreams(t, dir, conf, streamsMore...)
	startNginx(t, dir, conf, httpsPort)
	tlsFront(t, ln, "127.0.0.1:"+strconv.Itoa(httpsPort), pool)
	return proxy{Public: ln.Addr().String(), conf: conf}
}

func (p proxy) origin() http.Header {
	return http.Header{"Origin": {"https://" + p.Public}}
}

func wantStatus(t *testing.T, err error, code int) {
	t.Helper()
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != code {
		t.Fatalf("handshake error = %v, want HTTP %d", err, code)
	}
}

// nginxDuration parses an nginx time value ("120s", "2m", "90").
func nginxDuration(t *testing.T, v string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(`^(\d+)(ms|s|m|h|d)?$`).FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("unparseable nginx time %q", v)
	}
	n, _ := strconv.Atoi(m[1])
	unit := map[string]time.Duration{"ms": time.Millisecond, "": time.Second, "s": time.Second,
		"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
	return time.Duration(n) * unit
}

func directive(t *testing.T, conf, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*`+name+`\s+([^;]+);`).FindAllStringSubmatch(conf, -1)
	if len(m) != 1 {
		t.Fatalf("config has %d %s directives, want 1", len(m), name)
	}
	return strings.TrimSpace(m[0][1])
}

// TestProxyNginx: the committed config, as is, upgrades /ws over TLS with the
// default Origin check, delivers events, keeps idle connections and refuses
// a foreign Origin.
func TestProxyNginx(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	p := startProxy(t, front(t), n.Listen)

	// Idle connections: nginx closes a proxied connection silent for
	// proxy_read_timeout (default 60 s); the bridge pings every ping_interval,
	// so a timeout above two intervals keeps idle clients, with a lost ping
	// to spare.
	ping := config.Default().PingInterval.Duration
	for _, d := range []string{"proxy_read_timeout", "proxy_send_timeout"} {
		if v := nginxDuration(t, directive(t, p.conf, d)); v <= 2*ping || v <= 60*time.Second {
			t.Errorf("%s = %v, want above 2 x ping_interval (%v) and nginx's default 60s", d, v, ping)
		}
	}
	for d, want := range map[string]string{
		"proxy_http_version":                 "1.1",
		"proxy_buffering":                    "off",
		"proxy_set_header Upgrade":           "$http_upgrade",
		"proxy_set_header Connection":        "$connection_upgrade",
		"proxy_set_header Host":              "$http_host",
		"proxy_set_header X-Forwarded-For":   "$proxy_add_x_forwarded_for",
		"proxy_set_header X-Forwarded-Proto": "$scheme",
	} {
		if got := directive(t, p.conf, d); got != want {
			t.Errorf("%s %s, want %s", d, got, want)
		}
	}

	c := e2e.Dial(t, p.Public, "user=42&groups=ops", p.origin())
	c.WaitControl("caught_up", 5*time.Second)
	id := xadd(t, rdb, "notifications", "to", "group:ops", "type", "alarm.fiber_break", "data", `{"fiber":"F-12"}`)
	c.WaitEvents([]string{id}, 5*time.Second)
	want := `{"id":"` + id + `","type":"alarm.fiber_break","data":{"fiber":"F-12"}}`
	if got := c.Snapshot()[1].Raw; got != want {
		t.Fatalf("frame through nginx = %s, want %s", got, want)
	}

	_, err := e2e.TryDial(t, p.Public, "user=42", http.Header{"Origin": {"https://evil.example"}})
	wantStatus(t, err, 403)
}

// TestProxyNginxIdle: an idle connection through nginx lives as long as the
// keepalive (a ping from the bridge and the client's pong every
// ping_interval) comes more often than nginx's proxy_read_timeout, and is cut
// when it does not. Scaled down to seconds; the full-size values of the
// committed config are checked in TestProxyNginx.
func TestProxyNginxIdle(t *testing.T) {
	t.Run("timeout above ping_interval", func(t *testing.T) {
		t.Parallel()
		if closed := idleThroughNginx(t, time.Second, "3s", 7*time.Second); closed {
			t.Fatal("idle connection closed although proxy_read_timeout is above ping_interval")
		}
	})
	t.Run("timeout below ping_interval", func(t *testing.T) {
		t.Parallel()
		if closed := idleThroughNginx(t, 5*time.Second, "2s", 7*time.Second); !closed {
			t.Fatal("idle connection kept although proxy_read_timeout is below ping_interval: the test proves nothing")
		}
	})
}

// idleThroughNginx keeps a client idle for idle behind nginx with the proxy
// timeouts set to timeout and the node's ping_interval to ping, and reports
// whether the connection was closed; if not, an event must still arrive.
func idleThroughNginx(t *testing.T, ping time.Duration, timeout string, idle time.Duration) (closed bool) {
	t.Helper()
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--ping-interval", ping.String()}})
	p := startProxy(t, front(t), n.Listen,
		"proxy_read_timeout 120s;", "proxy_read_timeout "+timeout+";",
		"proxy_send_timeout 120s;", "proxy_send_timeout "+timeout+";")
	c := e2e.Dial(t, p.Public, "user=42", p.origin())
	c.WaitControl("caught_up", 5*time.Second)
	// The harness client answers the bridge's pings as a browser does.
	select {
	case <-c.Done():
		return true
	case <-time.After(idle):
	}
	id := xadd(t, rdb, "notifications", "to", "user:42", "data", `1`)
	c.WaitEvents([]string{id}, 5*time.Second)
	return false
}

// TestProxyNginxHostRewritten: when the proxy does not pass Host on, the
// default same-host Origin check fails (403); allowed_origins set to the
// public origin fixes it.
func TestProxyNginxHostRewritten(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	dropHost := []string{"proxy_set_header Host $http_host;", ""}

	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL()})
	p := startProxy(t, front(t), n.Listen, dropHost...)
	_, err := e2e.TryDial(t, p.Public, "user=42", p.origin())
	wantStatus(t, err, 403)

	ln := front(t)
	public := "https://" + ln.Addr().String()
	n2 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), Args: []string{"--allowed-origins", public}})
	p2 := startProxy(t, ln, n2.Listen, dropHost...)
	c := e2e.Dial(t, p2.Public, "user=42", p2.origin())
	c.WaitControl("caught_up", 5*time.Second)
	id := xadd(t, rdb, "notifications", "to", "user:42", "data", `2`)
	c.WaitEvents([]string{id}, 5*time.Second)
}

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxClientsPerProcess bounds the connections one process holds, below
// common fd limits (the bench machine allows 20,000 open files) with room
// for the Redis pool, pipes and the bridge's own descriptors when
// everything shares one host. More clients are spread over child processes
// (`notifybridge bench-client`).
const MaxClientsPerProcess = 9000

// setSpec is what one set of clients opens: users u<First> … u<First+Count-1>.
type setSpec struct {
	WSURL   string  `json:"ws_url"`
	First   int     `json:"first"`
	Count   int     `json:"count"`
	Resume  string  `json:"resume,omitempty"` // last_event_id for every client
	Run     string  `json:"run"`              // the run id: user names and event tags
	Dialers int     `json:"dialers"`          // concurrent handshakes
	Churn   float64 `json:"churn,omitempty"`  // percent of clients reconnecting a second, between "churn" and "calm"

	Transport  string `json:"transport,omitempty"`   // ws (default) or sse
	GroupSize  int    `json:"group_size,omitempty"`  // > 0: client i is in group groupName(run, i/GroupSize)
	JWTSecret  string `json:"jwt_secret,omitempty"`  // set: clients connect with an HS256 ?token= instead of ?user=
	TokenExp   int64  `json:"token_exp,omitempty"`   // the exp (unix s) of every client's first token
	RefreshExp int64  `json:"refresh_exp,omitempty"` // the exp of the tokens a "refresh" sends in band
	// RefreshSpread spreads a refresh's sends evenly over this long (0: all
	// at once), as an SDK refreshing at a jittered point of the lifetime would.
	RefreshSpread time.Duration `json:"refresh_spread,omitempty"`
}

// setStatus is a set's progress, sent by child processes as JSON lines.
type setStatus struct {
	Connected   int    `json:"connected"`
	CaughtUp    int    `json:"caught_up"`
	Received    int64  `json:"received"`
	Reconnects  int64  `json:"reconnects,omitempty"`
	Churning    bool   `json:"churning,omitempty"` // churn on, or calming: reconnects still under way
	ConnectDone bool   `json:"connect_done"`
	Acks        int64  `json:"acks,omitempty"`     // {"control":"token"} answers received
	BadAcks     int64  `json:"bad_acks,omitempty"` // answers with another exp than the refresh's
	Closed      int64  `json:"closed,omitempty"`   // connections the server ended
	Err         string `json:"err,omitempty"`
}

// setStats is what a set measured, once its clients are closed.
type setStats struct {
	First          int         `json:"first"`
	Unique         []int64     `json:"unique"` // per client, in user order
	Duplicated     int64       `json:"duplicated"`
	Misdelivered   int64       `json:"misdelivered"`
	Foreign        int64       `json:"foreign"`
	ServerClosed   map[int]int `json:"server_closed"` // close code → clients
	LastCaughtUpUS int64       `json:"last_caught_up_us"`
	Hist           latHist     `json:"hist"`
	Samples        []sample    `json:"samples"`
	Replay         latHist     `json:"replay"` // frames replayed on resume
	Reconnects     int64       `json:"reconnects"`
	ReconnectFails int64       `json:"reconnect_fails"`
	Phases         []latHist   `json:"phases,omitempty"` // live latency by phase (refresh)
	Closes         []closeRec  `json:"closes,omitempty"` // every connection the server ended, when
}

// closeRec is one connection the server ended: whose, with what code, when
// (unix µs, as read by the client).
type closeRec struct {
	User int   `json:"u"`
	Code int   `json:"c"`
	AtUS int64 `json:"at"`
}

// clientSet holds one process's clients.
type clientSet struct {
	spec    setSpec
	base    string // the transport's URL: /ws or /events
	clients []*wsClient
	io      clientIO // reads every client's frames and holds their latency
	conn    atomic.Int64
	caught  atomic.Int64
	done    atomic.Bool
	doneCh  chan struct{} // closed when connect returns
	errMu   sync.Mutex
	err     error

	reconnects     atomic.Int64
	reconnectFails atomic.Int64
	churning       atomic.Bool
	churnStop      chan struct{} // nil when churn is off
	churnDone      chan struct{}
	closesMu       sync.Mutex
	closes         map[int]int // close code → connections the bridge ended before a reconnect

	phase     atomic.Int32 // the run's phase, for the latency split (refresh)
	acks      atomic.Int64
	badAcks   atomic.Int64
	srvClosed atomic.Int64
}

func newClientSet(spec setSpec) *clientSet {
	s := &clientSet{spec: spec, base: spec.WSURL, clients: make([]*wsClient, spec.Count), doneCh: make(chan struct{})}
	switch spec.Transport {
	case "sse":
		s.base = transportURL(spec.WSURL, "/events")
	case "poll":
		s.base = transportURL(spec.WSURL, "/poll")
	}
	if spec.Transport == "poll" {
		s.io = newPollIO(&s.phase)
	} else {
		s.io = newClientIO(spec.Count, &s.phase)
	}
	return s
}

// transportURL turns ws://host:port/ws into http://host:port<path>.
func transportURL(wsURL, path string) string {
	u := strings.TrimSuffix(wsURL, "/ws")
	switch {
	case strings.HasPrefix(u, "ws://"):
		u = "http://" + u[len("ws://"):]
	case strings.HasPrefix(u, "wss://"):
		u = "https://" + u[len("wss://"):]
	}
	return u + path
}

// connect opens the set's clients, Dialers at a time so the bridge's accept
// backlog and handshake timeout are not what the run measures.
func (s *clientSet) connect(ctx context.Context) {
	defer close(s.doneCh)
	defer s.done.Store(true)
	sem := make(chan struct{}, max(1, s.spec.Dialers))
	var wg sync.WaitGroup
	for i := range s.spec.Count {
		if s.failed() != nil || ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			user := s.spec.First + i
			url := s.url(user)
			if s.spec.Resume != "" {
				url += "&last_event_id=" + s.spec.Resume
			}
			var c *wsClient
			var conn net.Conn
			var br *bufio.Reader
			var err error
			if s.spec.Transport == "poll" {
				c = &wsClient{user: user, tag: runTag(s.spec.Run), pollURL: s.url(user), done: make(chan struct{})}
			} else {
				c, conn, br, err = dialClient(ctx, s.spec.Transport == "sse", url, user, runTag(s.spec.Run))
			}
			if err != nil {
				s.fail(fmt.Errorf("client u%d: %w", user, err))
				return
			}
			c.caught = &s.caught
			c.acks, c.ackExp, c.badAcks, c.srvClose = &s.acks, s.spec.RefreshExp, &s.badAcks, &s.srvClosed
			if s.spec.Resume != "" {
				c.cursor, _ = parseID([]byte(s.spec.Resume))
				c.replaying = true
			}
			if err := s.io.attach(c, conn, br); err != nil {
				if conn != nil {
					_ = conn.Close()
				}
				s.fail(fmt.Errorf("client u%d: %w", user, err))
				return
			}
			s.clients[i] = c
			s.conn.Add(1)
		}(i)
	}
	wg.Wait()
	if ctx.Err() != nil {
		s.fail(ctx.Err())
	}
}

// url is user's /ws (or /events) address, without resume parameters: its
// name (and group) in the query, or a token naming it.
func (s *clientSet) url(user int) string {
	if s.spec.JWTSecret != "" {
		return s.base + "?token=" + s.token(user, s.spec.TokenExp)
	}
	u := s.base + "?user=" + userName(s.spec.Run, user)
	if s.spec.GroupSize > 0 {
		u += "&groups=" + groupName(s.spec.Run, user/s.spec.GroupSize)
	}
	return u
}

// token is user's HS256 token expiring at exp (unix s), with its group.
func (s *clientSet) token(user int, exp int64) string {
	claims := jwt.MapClaims{"sub": userName(s.spec.Run, user), "iat": time.Now().Unix() - 1, "exp": exp}
	if s.spec.GroupSize > 0 {
		claims["groups"] = []string{groupName(s.spec.Run, user/s.spec.GroupSize)}
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(s.spec.JWTSecret))
	if err != nil {
		panic(err) // HS256 with a non-empty key does not fail
	}
	return tok
}

// refresh sends every open client a new token in band, {"token":"<jwt>"}
// with exp RefreshExp, all at once (the wave that tokens issued together
// cause) or spread over RefreshSpread. The tokens are signed first, so the
// wave is only the sending.
func (s *clientSet) refresh() {
	<-s.doneCh
	frames := make([][]byte, len(s.clients))
	for i, c := range s.clients {
		if c != nil {
			frames[i] = []byte(`{"token":"` + s.token(c.user, s.spec.RefreshExp) + `"}`)
		}
	}
	start := time.Now()
	for i, c := range s.clients {
		if d := s.spec.RefreshSpread; d > 0 {
			if ahead := time.Until(start.Add(d * time.Duration(i) / time.Duration(len(s.clients)))); ahead > time.Millisecond {
				time.Sleep(ahead)
			}
		}
		if c == nil || c.down() {
			continue
		}
		c.wmu.Lock()
		send := c.send
		c.wmu.Unlock()
		if send != nil {
			send(frames[i])
		}
	}
}

// command runs one of the parent's commands besides churn: "phase <n>"
// and "refresh".
func (s *clientSet) command(cmd string) {
	switch {
	case cmd == "refresh":
		s.refresh()
	case strings.HasPrefix(cmd, "phase "):
		if n, err := strconv.Atoi(strings.TrimPrefix(cmd, "phase ")); err == nil {
			s.phase.Store(int32(n))
		}
	}
}

func (s *clientSet) fail(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
}

func (s *clientSet) failed() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

func (s *clientSet) status() setStatus {
	st := setStatus{Connected: int(s.conn.Load()), CaughtUp: int(s.caught.Load()), Received: s.io.received(),
		Reconnects: s.reconnects.Load(), Churning: s.churning.Load(), ConnectDone: s.done.Load(),
		Acks: s.acks.Load(), BadAcks: s.badAcks.Load(), Closed: s.srvClosed.Load()}
	if err := s.failed(); err != nil {
		st.Err = err.Error()
	}
	return st
}

// finish closes every client and returns what the set measured. The
// caller cancels connect's context first; finish waits for it to return so
// no dial is still adding a client.
func (s *clientSet) finish() *setStats {
	<-s.doneCh
	s.stopChurn()
	var wg sync.WaitGroup
	for _, c := range s.clients {
		if c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.close() }()
		}
	}
	wg.Wait()
	st := &setStats{First: s.spec.First, Unique: make([]int64, len(s.clients)), ServerClosed: map[int]int{},
		Reconnects: s.reconnects.Load(), ReconnectFails: s.reconnectFails.Load()}
	s.closesMu.Lock()
	for code, n := range s.closes {
		st.ServerClosed[code] += n
	}
	s.closesMu.Unlock()
	for i, c := range s.clients {
		if c == nil {
			continue
		}
		c.mu.Lock()
		st.Unique[i] = c.unique
		st.Duplicated += c.dups
		st.Misdelivered += c.misdeliver
		st.Foreign += c.foreign
		if c.serverClosed {
			st.ServerClosed[c.closeCode]++
			st.Closes = append(st.Closes, closeRec{User: c.user, Code: c.closeCode, AtUS: c.closedUS})
		}
		st.LastCaughtUpUS = max(st.LastCaughtUpUS, c.caughtUpUS)
		c.mu.Unlock()
	}
	if p, ok := s.io.(*pollIO); ok {
		st.ReconnectFails += p.retries.Load()
	}
	m := s.io.merged()
	st.Hist, st.Samples, st.Replay = m.live, m.chart, m.replay
	if s.phase.Load() != 0 || m.phases[0].N > 0 {
		st.Phases = m.phases[:]
	}
	s.io.stop()
	return st
}

// fleet is a set of clients in this process or in a child process.
type fleet interface {
	status() setStatus
	churn(on bool)      // start or stop reconnecting clients (spec.Churn); status().Churning until stopped
	command(cmd string) // clientSet.command: "phase <n>", "refresh" (returns once sent, remote: once written)
	finish() (*setStats, error)
}

type localFleet struct {
	set    *clientSet
	ctx    context.Context
	cancel context.CancelFunc
}

func startLocal(ctx context.Context, spec setSpec) *localFleet {
	ctx, cancel := context.WithCancel(ctx)
	f := &localFleet{set: newClientSet(spec), ctx: ctx, cancel: cancel}
	go f.set.connect(ctx)
	return f
}

func (f *localFleet) status() setStatus { return f.set.status() }

func (f *localFleet) churn(on bool) {
	if on {
		f.set.startChurn(f.ctx)
	} else {
		f.set.stopChurn()
	}
}

func (f *localFleet) command(cmd string) { f.set.command(cmd) }

func (f *localFleet) finish() (*setStats, error) {
	f.cancel()
	return f.set.finish(), nil
}

// remoteFleet is a `notifybridge bench-client` child. Protocol, one JSON
// value per line: the parent writes the setSpec, the child answers with
// setStatus lines every 100 ms; the parent may write "churn" and "calm" to
// start and stop reconnects; the parent writes "finish", the child closes
// its clients and answers {"stats": …} and exits. A closed stdin (the
// parent died) also closes everything, so no orphan keeps connections.
type remoteFleet struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	last   setStatus
	stats  chan *setStats
	exited chan struct{}
	stderr *tailBuffer
}

type childLine struct {
	Status *setStatus `json:"status,omitempty"`
	Stats  *setStats  `json:"stats,omitempty"`
}

func startRemote(binary string, spec setSpec) (*remoteFleet, error) {
	cmd := exec.Command(binary, "bench-client")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	f := &remoteFleet{cmd: cmd, stdin: stdin, stats: make(chan *setStats, 1), exited: make(chan struct{}), stderr: &tailBuffer{}}
	cmd.Stderr = f.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start bench-client: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 256<<20) // the stats line carries the histogram and samples
		for sc.Scan() {
			var l childLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			if l.Status != nil {
				f.mu.Lock()
				f.last = *l.Status
				f.mu.Unlock()
			}
			if l.Stats != nil {
				f.stats <- l.Stats
			}
		}
		_ = cmd.Wait()
		close(f.exited)
	}()
	line, _ := json.Marshal(spec)
	if _, err := fmt.Fprintf(stdin, "%s\n", line); err != nil {
		return nil, fmt.Errorf("bench-client: %w", err)
	}
	return f, nil
}

func (f *remoteFleet) status() setStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.last
	select {
	case <-f.exited:
		if st.Err == "" {
			st.Err = "bench-client exited: " + f.stderr.String()
		}
		st.ConnectDone = true
	default:
	}
	return st
}

func (f *remoteFleet) churn(on bool) {
	cmd := "calm\n"
	if on {
		cmd = "churn\n"
	}
	_, _ = io.WriteString(f.stdin, cmd)
}

func (f *remoteFleet) command(cmd string) { _, _ = io.WriteString(f.stdin, cmd+"\n") }

func (f *remoteFleet) finish() (*setStats, error) {
	_, _ = io.WriteString(f.stdin, "finish\n")
	select {
	case st := <-f.stats:
		_ = f.stdin.Close()
		<-f.exited
		return st, nil
	case <-f.exited:
		return nil, fmt.Errorf("bench-client exited without stats: %s", f.stderr.String())
	case <-time.After(60 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.exited
		return nil, errors.New("bench-client did not report within 60s")
	}
}

// ClientMain is the hidden `notifybridge bench-client` subcommand: one
// process's share of a run's clients, driven over stdin and stdout.
func ClientMain(stdin io.Reader, stdout io.Writer) error {
	in := bufio.NewScanner(stdin)
	if !in.Scan() {
		return errors.New("bench-client: no spec on stdin (this command is started by `notifybridge bench`)")
	}
	var spec setSpec
	if err := json.Unmarshal(in.Bytes(), &spec); err != nil {
		return fmt.Errorf("bench-client: spec: %w", err)
	}
	if spec.Count > MaxClientsPerProcess {
		return fmt.Errorf("bench-client: %d clients is above %d per process", spec.Count, MaxClientsPerProcess)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set := newClientSet(spec)
	go set.connect(ctx)
	var outMu sync.Mutex
	write := func(l childLine) {
		b, _ := json.Marshal(l)
		outMu.Lock()
		_, _ = fmt.Fprintf(stdout, "%s\n", b)
		outMu.Unlock()
	}
	finish := make(chan struct{})
	go func() {
		defer close(finish) // "finish" or the parent went away
		for in.Scan() {
			switch strings.TrimSpace(in.Text()) {
			case "churn":
				set.startChurn(ctx)
			case "calm":
				set.stopChurn() // Churning in the status lines until it returns
			case "finish":
				return
			default:
				set.command(strings.TrimSpace(in.Text()))
			}
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			st := set.status()
			write(childLine{Status: &st})
		case <-finish:
			cancel()
			st := set.status()
			write(childLine{Status: &st})
			write(childLine{Stats: set.finish()})
			return nil
		}
	}
}

// tailBuffer keeps the last few KiB a child wrote, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-4096:]...)
	}
	t.mu.Unlock()
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// binaryPath is the notifybridge binary for child processes.
func binaryPath(o Options) (string, error) {
	if o.Binary != "" {
		return o.Binary, nil
	}
	return os.Executable()
}

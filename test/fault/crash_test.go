package fault

import (
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestKill9UnderLoad: a node is killed with SIGKILL while a producer appends
// ~1k events/s; it restarts with the same node_id (the same consumer group)
// and every session, resuming from the last id it stored, ends with exactly
// the events the stream holds for it.
func TestKill9UnderLoad(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{AppendOnly: true, FsyncAlways: true})
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "crashy"})
	names := users("u", pick(20, 100))
	rs2 := sessions(t, n.Listen, names)
	p := startProducer(t, rdb, "notifications", names, 1000, 0)

	time.Sleep(pick(2*time.Second, 30*time.Second)) // load before the crash
	n.Kill()
	for _, r := range rs2 {
		select {
		case <-r.conns[len(r.conns)-1].Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: connection survived the node's SIGKILL", r.user)
		}
	}
	time.Sleep(500 * time.Millisecond) // appends while no node runs
	n.Start()
	n.WaitReady(30 * time.Second)
	for _, r := range rs2 {
		r.mustConnect(n.Listen, 10*time.Second)
	}
	time.Sleep(pick(2*time.Second, 30*time.Second)) // load after the restart
	p.Stop()
	t.Logf("producer: %d appended, %d failed", p.ok.Load(), p.failed.Load())
	checkAll(t, rdb, "notifications", rs2, true, 30*time.Second)
}

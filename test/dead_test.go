package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestDeadListAndRequeue: an operator lists dead letters with their reasons,
// removes the cause (here a max_event_bytes too small for the entry) and
// requeues the entry; the bridge then delivers it byte for byte.
func TestDeadListAndRequeue(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	n := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "dead", Args: []string{"--max-event-bytes", "16"}})
	c := e2e.Dial(t, n.Listen, "user=u", nil)
	c.WaitControl("caught_up", 5*time.Second)
	big := `{"fiber":"F-12","km":3.2}` // 25 bytes: over max_event_bytes 16
	orig := xadd(t, rdb, "notifications", "to", "user:u", "type", "alarm", "data", big)
	var deadID string
	e2e.WaitFor(t, 10*time.Second, "dead letter", func() error {
		out, err := e2e.RunCLI(t, 20*time.Second, "dead", "list", "--redis-url", rs.URL())
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, "id="+orig) || !strings.Contains(out, "max_event_bytes") {
			return fmt.Errorf("dead list: %q", out)
		}
		deadID = strings.Fields(out)[0]
		return nil
	})

	// The operator raises the limit (a restart with the new setting), then requeues.
	n.Kill()
	n2 := e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "dead"})
	c2 := e2e.Dial(t, n2.Listen, "user=u", nil)
	c2.WaitControl("caught_up", 5*time.Second)
	out, err := e2e.RunCLI(t, 20*time.Second, "dead", "requeue", deadID, "--redis-url", rs.URL())
	if err != nil {
		t.Fatalf("requeue: %v %s", err, out)
	}
	newID := strings.TrimSpace(strings.SplitN(out, "-> ", 2)[1])
	c2.WaitEvents([]string{newID}, 10*time.Second)
	if got := c2.Snapshot()[len(c2.Snapshot())-1].Raw; got != `{"id":"`+newID+`","type":"alarm","data":`+big+`}` {
		t.Fatalf("requeued frame = %s", got)
	}
	if n, _ := rdb.XLen(context.Background(), "notifications:dead").Result(); n != 0 {
		t.Fatalf("%d dead letters left after requeue", n)
	}
}

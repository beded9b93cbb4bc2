package fault

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// TestClientsMoveBetweenNodes: three nodes share one Redis; while producers
// append, every session keeps hopping to a random node, resuming from the
// last id it stored. Nothing is lost and nothing repeats, within a
// connection or across them.
func TestClientsMoveBetweenNodes(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	var nodes []*e2e.Node
	for i := range 3 {
		nodes = append(nodes, e2e.StartNode(t, e2e.NodeOptions{RedisURL: rs.URL(), NodeID: "n" + strconv.Itoa(i)}))
	}
	names := users("u", pick(30, 200))
	sess := sessions(t, nodes[0].Listen, names)
	p := startProducer(t, rdb, "notifications", names, pick(300, 1000), 0)
	p2 := startProducer(t, rdb, "notifications", names, pick(100, 300), 0) // a second producer interleaves

	deadline := time.Now().Add(pick(6*time.Second, 5*time.Minute))
	var wg sync.WaitGroup
	var mu sync.Mutex
	moves := 0
	for _, r := range sess {
		wg.Add(1)
		go func(r *resumer, seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			for time.Now().Before(deadline) {
				time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
				// connect closes the old connection first, so the id it
				// resumes from is final.
				if err := r.connect(nodes[rng.IntN(len(nodes))].Listen); err != nil {
					t.Errorf("%s: reconnect: %v", r.user, err)
					return
				}
				mu.Lock()
				moves++
				mu.Unlock()
			}
		}(r, uint64(len(r.user))<<32|uint64(rand.Uint32()))
	}
	wg.Wait()
	p.Stop()
	p2.Stop()
	t.Logf("%d moves; producers appended %d", moves, p.ok.Load()+p2.ok.Load())
	checkAll(t, rdb, "notifications", sess, true, 30*time.Second)
}

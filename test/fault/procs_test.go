package fault

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifybridge/notifybridge/internal/e2e"
	"github.com/notifybridge/notifybridge/internal/redistest"
)

// startSentinel runs `redis-server <conf> --sentinel` monitoring master as
// "mymaster" with quorum 1 (a manual SENTINEL FAILOVER needs no vote), and
// kills it when the test ends. Sentinel insists on a writable config file.
func startSentinel(t testing.TB, masterPort int) int {
	t.Helper()
	port := redistest.FreePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor mymaster 127.0.0.1 %d 1\n"+
		"sentinel down-after-milliseconds mymaster 2000\n"+
		"sentinel failover-timeout mymaster 10000\n", port, dir, filepath.Join(dir, "sentinel.log"), masterPort)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			t.Logf("sentinel %d log:\n%s", port, e2e.LastLines(string(log), 30))
		}
	})
	c := redis.NewSentinelClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
	defer c.Close()
	e2e.WaitFor(t, 10*time.Second, "sentinel answers", func() error {
		return c.Ping(context.Background()).Err()
	})
	return port
}

// startCluster runs three cluster-enabled redis-server masters (each with
// replicas replicas), joins them with `redis-cli --cluster create` and waits
// until every node says the cluster is ok. It returns the node addresses.
func startCluster(t testing.TB, replicas int) []string {
	t.Helper()
	var addrs []string
	for range 3 * (1 + replicas) {
		s := redistest.Start(t, redistest.Options{Extra: []string{"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"}})
		addrs = append(addrs, s.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		e2e.WaitFor(t, 20*time.Second, "cluster_state:ok on "+a, func() error {
			info, err := c.ClusterInfo(context.Background()).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("not ok yet")
			}
			return nil
		})
		_ = c.Close()
	}
	return addrs
}

package node

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/internal/redistest"
	"github.com/notifybridge/notifybridge/publisher"
)

const benchPublishBody = `{"to":"user:42,group:ops","type":"alarm.fiber","data":{"fiber":"F-12","km":3.2}}`

// BenchmarkPublishHTTP is POST /v1/publish over loopback HTTP/1.1 keep-alive
// against BenchmarkPublishXADD, the same event straight to Redis: the price
// of the HTTP path per accepted event (run both with -cpu and -benchtime alike).
func BenchmarkPublishHTTP(b *testing.B) {
	srv := redistest.Start(b)
	pub := publisher.New(srv.Client(), "s", bridge.DefaultLimits)
	h := httptest.NewServer(publishHandler("k", pub, bridge.DefaultLimits, zap.NewNop()))
	b.Cleanup(h.Close)
	client := h.Client()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", h.URL, strings.NewReader(benchPublishBody))
			req.Header.Set("Authorization", "Bearer k")
			resp, err := client.Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				b.Errorf("publish: %v", err)
				return
			}
			_ = resp.Body.Close()
		}
	})
}

func BenchmarkPublishXADD(b *testing.B) {
	srv := redistest.Start(b)
	pub := publisher.New(srv.Client(), "s", bridge.DefaultLimits)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := pub.Publish(ctx, "user:42,group:ops", "alarm.fiber", `{"fiber":"F-12","km":3.2}`); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

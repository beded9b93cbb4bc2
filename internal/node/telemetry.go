package node

import (
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/notifybridge/notifybridge/bridge"
	"github.com/notifybridge/notifybridge/transport/streams"
)

// telemetry turns the rooms' hooks into Prometheus metrics. Each metric is
// declared once, in newTelemetry, and registered as it is made. Names start
// with notifybridge_, units are in the names, and no label carries a user
// id, group name or free text: cardinality stays fixed.
type telemetry struct {
	ingested       prometheus.Counter
	deadLettered   *prometheus.CounterVec
	acked          prometheus.Counter
	batchSize      prometheus.Histogram
	groupLag       prometheus.Gauge
	groupPending   prometheus.Gauge
	redisErrors    *prometheus.CounterVec
	connections    prometheus.Gauge
	refused        *prometheus.CounterVec
	closes         *prometheus.CounterVec
	framesWritten  prometheus.Counter
	bytesWritten   prometheus.Counter
	writeErrors    prometheus.Counter
	slowCloses     *prometheus.CounterVec
	windowBytes    prometheus.Gauge
	windowEvents   prometheus.Gauge
	evictions      prometheus.Counter
	resumes        *prometheus.CounterVec
	gaps           prometheus.Counter
	redisDataLoss  prometheus.Counter
	latency        prometheus.Histogram
	appended       prometheus.Counter
	duplicateDrops prometheus.Counter
	retries        prometheus.Counter
	backfillReads  prometheus.Counter
	backfillRows   prometheus.Counter
}

// newTelemetry registers the node's metrics on reg. notifybridge_ready is
// read from ready at each scrape, so it never lags /readyz.
func newTelemetry(reg prometheus.Registerer, version string, ready *Readiness, maxConnections int) *telemetry {
	f := promauto.With(reg)
	t := &telemetry{
		ingested: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_entries_ingested_total",
			Help: "Stream entries read by the ingest router (pending re-reads included)."}),
		deadLettered: f.NewCounterVec(prometheus.CounterOpts{Name: "notifybridge_entries_dead_lettered_total",
			Help: "Entries written to <stream>:dead, by reason class."}, []string{"reason"}),
		acked: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_entries_acked_total",
			Help: "Entries acknowledged with XACK."}),
		batchSize: f.NewHistogram(prometheus.HistogramOpts{Name: "notifybridge_ingest_batch_entries",
			Help: "Entries per XREADGROUP reply.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}}),
		groupLag: f.NewGauge(prometheus.GaugeOpts{Name: "notifybridge_consumer_group_lag_entries",
			Help: "Entries in the stream not yet delivered to this node's group (XINFO GROUPS lag)."}),
		groupPending: f.NewGauge(prometheus.GaugeOpts{Name: "notifybridge_consumer_group_pending_entries",
			Help: "Entries delivered to this node's group and not yet acknowledged."}),
		redisErrors: f.NewCounterVec(prometheus.CounterOpts{Name: "notifybridge_redis_errors_total",
			Help: "Failed Redis commands, by command."}, []string{"op"}),
		connections: f.NewGauge(prometheus.GaugeOpts{Name: "notifybridge_connections",
			Help: "Open WebSocket connections."}),
		refused: f.NewCounterVec(prometheus.CounterOpts{Name: "notifybridge_handshakes_refused_total",
			Help: "WebSocket handshakes refused, by HTTP status."}, []string{"status"}),
		closes: f.NewCounterVec(prometheus.CounterOpts{Name: "notifybridge_connections_closed_total",
			Help: "Connections closed, by WebSocket close code (1006: closed at TCP level)."}, []string{"code"}),
		framesWritten: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_frames_written_total",
			Help: "WebSocket frames written."}),
		bytesWritten: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_bytes_written_total",
			Help: "Bytes written to WebSocket connections."}),
		writeErrors: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_write_errors_total",
			Help: "Socket write errors."}),
		slowCloses: f.NewCounterVec(prometheus.CounterOpts{Name: "notifybridge_slow_client_closes_total",
			Help: "Connections closed for being slow (1013 or at TCP level), by cause: write_timeout, evicted, replay_failed, replay_trimmed."}, []string{"cause"}),
		windowBytes: f.NewGauge(prometheus.GaugeOpts{Name: "notifybridge_replay_window_bytes",
			Help: "Bytes the replay window accounts for."}),
		windowEvents: f.NewGauge(prometheus.GaugeOpts{Name: "notifybridge_replay_window_events",
			Help: "Events held in the replay window."}),
		evictions: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_replay_window_evictions_total",
			Help: "Events evicted from the replay window."}),
		resumes: f.NewCounterVec(prometheus.CounterOpts{Name: "notifybridge_resumes_total",
			Help: "Resume requests, by where they were served from (window, redis)."}, []string{"source"}),
		gaps: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_resume_gaps_total",
			Help: "Resumes that reported a gap (history trimmed, or lost with Redis's data)."}),
		redisDataLoss: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_redis_data_loss_total",
			Help: "Times this node saw Redis lose stream entries it had read (restart without persistence, failover to a replica behind)."}),
		latency: f.NewHistogram(prometheus.HistogramOpts{Name: "notifybridge_delivery_latency_seconds",
			Help:    "From the entry id's time to the frame handed to a connection's writer; 1 ms resolution (stream ids carry milliseconds); sampled: the first live event of one pull in 16 per connection.",
			Buckets: []float64{.001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		appended: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_replay_window_appends_total",
			Help: "Events appended to the replay window."}),
		duplicateDrops: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_redelivered_entries_total",
			Help: "Entries redelivered by the stream that the window already held (acked, not appended twice)."}),
		retries: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_handler_retries_total",
			Help: "In-place retries of entries whose handling failed."}),
		backfillReads: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_backfill_reads_total",
			Help: "Pages read from Redis (XRANGE) for resumes older than the replay window; shared by concurrent resumes."}),
		backfillRows: f.NewCounter(prometheus.CounterOpts{Name: "notifybridge_backfill_entries_total",
			Help: "Entries those backfill pages carried."}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "notifybridge_ready",
		Help: "1 while /readyz answers 200, else 0."}, func() float64 {
		if ready.Check() != nil {
			return 0
		}
		return 1
	})
	f.NewGauge(prometheus.GaugeOpts{Name: "notifybridge_max_connections",
		Help: "The max_connections setting, for saturation ratios."}).Set(float64(maxConnections))
	f.NewGauge(prometheus.GaugeOpts{Name: "notifybridge_build_info",
		Help:        "Build information; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}}).Set(1)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return t
}

// Ingest (transport/streams.Hooks).

func (t *telemetry) EntriesRead(n int) {
	t.ingested.Add(float64(n))
	if n > 0 {
		t.batchSize.Observe(float64(n))
	}
}
func (t *telemetry) AcksFlushed(n int)             { t.acked.Add(float64(n)) }
func (t *telemetry) RedisError(op string, _ error) { t.redisErrors.WithLabelValues(op).Inc() }
func (t *telemetry) setGroup(g streams.GroupLag) {
	t.groupLag.Set(float64(g.Lag))
	t.groupPending.Set(float64(g.Pending))
}

// WebSocket pool (transport/wspool.Hooks).

func (t *telemetry) ConnOpened() { t.connections.Inc() }
func (t *telemetry) ConnClosed(code int) {
	t.connections.Dec()
	t.closes.WithLabelValues(strconv.Itoa(code)).Inc()
}
func (t *telemetry) HandshakeRefused(status int, _ string) {
	t.refused.WithLabelValues(strconv.Itoa(status)).Inc()
}
func (t *telemetry) FramesWritten(frames, bytes int) {
	t.framesWritten.Add(float64(frames))
	t.bytesWritten.Add(float64(bytes))
}
func (t *telemetry) WriteError()             { t.writeErrors.Inc() }
func (t *telemetry) SlowClosed(cause string) { t.slowCloses.WithLabelValues(cause).Inc() }

// bridgeTelemetry adapts bridge.Hooks.
type bridgeTelemetry struct{ t *telemetry }

func (t *telemetry) bridgeHooks() bridgeTelemetry { return bridgeTelemetry{t} }

func (b bridgeTelemetry) Appended()      { b.t.appended.Inc() }
func (b bridgeTelemetry) Evicted(n int)  { b.t.evictions.Add(float64(n)) }
func (b bridgeTelemetry) Gap()           { b.t.gaps.Inc() }
func (b bridgeTelemetry) RedisLostData() { b.t.redisDataLoss.Inc() }
func (b bridgeTelemetry) BackfillRead(entries int) {
	b.t.backfillReads.Inc()
	b.t.backfillRows.Add(float64(entries))
}
func (b bridgeTelemetry) WindowSize(events int, bytes int64) {
	b.t.windowEvents.Set(float64(events))
	b.t.windowBytes.Set(float64(bytes))
}
func (b bridgeTelemetry) Resumed(from bridge.ResumeSource) {
	b.t.resumes.WithLabelValues(from.String()).Inc()
}
func (b bridgeTelemetry) SlowClosed(cause string) { b.t.slowCloses.WithLabelValues(cause).Inc() }

// Lag is the delivery latency: from the entry id's time (1 ms resolution) to
// the frame handed to the connection's writer. The bridge samples it (one
// live pull in 16 per connection) so the histogram costs no clock read and
// no atomic add per recipient at fan-out rates.
func (b bridgeTelemetry) Lag(d time.Duration) { b.t.latency.Observe(max(d, 0).Seconds()) }

func (t *telemetry) ingestHooks() *telemetry { return t }

// handlerTelemetry adapts handlers.Hooks.
type handlerTelemetry struct{ t *telemetry }

func (t *telemetry) handlerHooks() handlerTelemetry { return handlerTelemetry{t} }

func (h handlerTelemetry) Redelivered() { h.t.duplicateDrops.Inc() }
func (h handlerTelemetry) Retried()     { h.t.retries.Inc() }
func (h handlerTelemetry) DeadLettered(bad bool) {
	class := "handler_failed"
	if bad {
		class = "bad_entry"
	}
	h.t.deadLettered.WithLabelValues(class).Inc()
}
func (h handlerTelemetry) DeadLetterFailed() { h.t.redisErrors.WithLabelValues("dead_letter").Inc() }

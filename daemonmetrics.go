// The daemon's own measurements, served by GET /v1/metrics: how long the
// messages it sent took from the send (accepted into the outbox) to each
// rung its receipts reported, as histograms.
package main

import (
	"sync"
	"time"
)

// latencyBoundsMs are the histograms' upper bounds: from a message shown
// at once to one a session saw ten minutes later.
var latencyBoundsMs = []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000}

// latencyHistogram counts durations into latencyBoundsMs.
type latencyHistogram struct {
	mu     sync.Mutex
	counts []int64 // one more than the bounds: the last is over them all
	count  int64
	sumMs  float64
}

func (h *latencyHistogram) observe(d time.Duration) {
	ms := float64(max(d, 0)) / float64(time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts == nil {
		h.counts = make([]int64, len(latencyBoundsMs)+1)
	}
	i := 0
	for i < len(latencyBoundsMs) && ms > latencyBoundsMs[i] {
		i++
	}
	h.counts[i]++
	h.count++
	h.sumMs += ms
}

func (h *latencyHistogram) view() histogramView {
	h.mu.Lock()
	defer h.mu.Unlock()
	counts := make([]int64, len(latencyBoundsMs)+1)
	copy(counts, h.counts)
	return histogramView{BoundsMs: latencyBoundsMs, Counts: counts, Count: h.count, SumMs: h.sumMs}
}

// daemonMetrics are the daemon's histograms.
type daemonMetrics struct {
	sendToDelivered latencyHistogram
	sendToSurfaced  latencyHistogram
}

func (d *Daemon) handleMetrics(*ipcRequest, noRequest) (MetricsReply, error) {
	return MetricsReply{SendToDelivered: d.metrics.sendToDelivered.view(), SendToSurfaced: d.metrics.sendToSurfaced.view()}, nil
}

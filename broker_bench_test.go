// Benchmark of one send's path through the broker: send, ack, push, client_ack.
package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// BenchmarkBrokerSendPush measures one broadcast from a sender to N
// recipients on loopback: from writing the send to the last recipient
// holding the push (each recipient acks every push, as a daemon does).
// Reports p50/p99 of that latency and messages (and deliveries) per second.
//
//	go test -run XXX -bench BrokerSendPush -benchtime 2000x .
func BenchmarkBrokerSendPush(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("recipients=%d", n), func(b *testing.B) {
			br, url := startTestBrokerWith(b, BrokerOptions{SendBurst: 1 << 30, SendPerMinute: 1 << 30,
				HandshakeBurst: 1 << 20, MaxConnectionsPerMesh: 1 << 20})
			owner := newTestMesh(b, br, url, "bench", "sender")
			sender := connectMember(b, url, owner)
			go func() {
				for range sender.frames { // acks
				}
			}()
			arrivals := make(chan struct{}, 1024)
			for i := 0; i < n; i++ {
				m := addTestMember(b, br, owner, fmt.Sprintf("r%d", i), roleMember)
				rc := connectMember(b, url, m)
				go func() {
					for data := range rc.frames {
						var f PushFrame
						if json.Unmarshal(data, &f) != nil || f.Type != framePush || f.Subtype == subtypeSystem {
							continue
						}
						ack, _ := json.Marshal(ClientAckFrame{Type: frameClientAck, ClientMessageID: f.ClientMessageID, BrokerMessageID: f.MessageID})
						rc.ws.Write(br.ctx, websocket.MessageText, ack)
						arrivals <- struct{}{}
					}
				}()
			}
			nonce, ct := plainBody([]byte("benchmark message body of a typical length for a chat line"))
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				id := newUUID()
				sender.sendJSON(SendFrame{Type: frameSend, ID: id, ClientMessageID: id, TargetSpec: "*", Priority: priorityNow, Nonce: nonce, Ciphertext: ct})
				for j := 0; j < n; j++ {
					select {
					case <-arrivals:
					case <-time.After(testWait):
						b.Fatalf("message %d: only %d of %d pushes arrived", i, j, n)
					}
				}
				lat = append(lat, time.Since(t0))
			}
			elapsed := time.Since(start)
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N*n)/elapsed.Seconds(), "deliveries/s")
		})
	}
}

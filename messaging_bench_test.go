// Benchmarks of a message end to end: DM latency, a send as a process, a
// send over IPC.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"testing"
	"time"
)

// sortDurations sorts latencies in place, shortest first.
func sortDurations(lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
}

func reportLatencies(b *testing.B, lat []time.Duration) {
	sortDurations(lat)
	b.ReportMetric(percentileMs(lat, 0.50), "p50-ms")
	b.ReportMetric(percentileMs(lat, 0.99), "p99-ms")
}

// BenchmarkDMEndToEnd measures one DM from session A on one daemon to
// session B on another, through a real broker: from POST /v1/send (IPC
// accept, encryption, outbox row) to B's `message` event on /v1/events
// (push, decryption, inbox row). Budget: p50 ≤ 5 ms, p99 ≤ 25 ms.
//
//	go test -run XXX -bench DMEndToEnd -benchtime 2000x .
func BenchmarkDMEndToEnd(b *testing.B) {
	f := newMsgFixture(b, nil)
	a := registerTestSession(b, f.d1, f.me, "alice")
	r := registerTestSession(b, f.d2, f.bob, "bert")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, _, err := r.cl.Events(ctx)
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		text := fmt.Sprintf("benchmark message %d, of a typical length for a chat line", i)
		t0 := time.Now()
		if err := a.cl.Do(ctx, "POST", "/v1/send", map[string]any{"to": r.pub(), "message": text}, nil); err != nil {
			b.Fatal(err)
		}
		for got := false; !got; {
			select {
			case ev, ok := <-events:
				if !ok {
					b.Fatal("event stream ended")
				}
				var d struct {
					Body string `json:"body"`
				}
				got = ev.Kind == eventMessage && json.Unmarshal(ev.Data, &d) == nil && d.Body == text
			case <-time.After(testWait):
				b.Fatalf("message %d did not arrive", i)
			}
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatencies(b, lat)
}

// BenchmarkSendProcess measures `claudemesh send <key> <text>` as a whole
// process against a warm daemon: exec, config, daemon probe, IPC send into
// the durable outbox, output. Budget: median ≤ 5 ms. With --wait 0 the
// process ends once the message is durable while its delivery goes on, so
// "send" starts each process once the previous message was delivered (off
// the clock), as a user sends one message; "send-back-to-back" does not
// wait, and each process shares the two cores with the delivery of the one
// before. The "version" case is the floor: the same binary doing nothing
// but start, print its version and exit.
//
//	go test -run XXX -bench SendProcess -benchtime 300x .
func BenchmarkSendProcess(b *testing.B) {
	f := newMsgFixture(b, nil)
	registerTestSession(b, f.d2, f.bob, "bert")
	bin := claudemeshBinary(b)
	env := []string{"PATH=" + os.Getenv("PATH"), "CLAUDEMESH_INTERNAL_NO_AUTOSPAWN=1"}
	for k, v := range f.h1.env() {
		env = append(env, k+"="+v)
	}
	sender := f.d1.client("")
	// delivered waits until the recipient's daemon has the message.
	delivered := func(b *testing.B, clientID string) {
		q := MessageQuery{ID: clientID, WaitMs: int(testWait.Milliseconds()), Until: rungDelivered}
		rep, err := callIPCWithin(context.Background(), sender, testWait+ipcTimeout, apiMessage, q)
		if err != nil || rep.Message.Ladder == nil || rungOrder[rep.Message.Ladder.Rung] < rungOrder[rungDelivered] {
			b.Fatalf("message %s not delivered: %+v, %v", clientID, rep.Message, err)
		}
	}
	sendArgs := func(id string) []string {
		return []string{"send", "--wait", "0", "--client-id", id, f.bob.Pubkey, "process benchmark " + id}
	}
	for _, bc := range []struct {
		name  string
		args  func(id string) []string
		after func(b *testing.B, id string) // off the clock
	}{
		{"send", sendArgs, delivered},
		{"send-back-to-back", sendArgs, nil},
		{"version", func(string) []string { return []string{"--version"} }, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			run := func(args []string) {
				cmd := exec.Command(bin, args...)
				cmd.Env = env
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %v\n%s", args, err, out)
				}
			}
			// Every process sends under an id of its own: a repeated one
			// would be answered as a duplicate, not sent.
			newID := func() string { return fmt.Sprintf("bench-%d", time.Now().UnixNano()) }
			run(bc.args(newID())) // page the binary in
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := newID()
				t0 := time.Now()
				run(bc.args(id))
				lat = append(lat, time.Since(t0))
				if bc.after != nil {
					b.StopTimer()
					bc.after(b, id)
					b.StartTimer()
				}
			}
			b.StopTimer()
			reportLatencies(b, lat)
		})
	}
}

// BenchmarkSendIPC measures POST /v1/send with wait_ms against a warm
// daemon: accept, encryption, outbox row, drain, broker ack, reply — the
// daemon's share of a warm `claudemesh send`.
//
//	go test -run XXX -bench SendIPC -benchtime 2000x .
func BenchmarkSendIPC(b *testing.B) {
	f := newMsgFixture(b, nil)
	cl := f.d1.client("")
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		var a SendReply
		if err := cl.Do(ctx, "POST", "/v1/send", map[string]any{"to": f.bob.Pubkey, "message": "ipc benchmark", "wait_ms": 5000}, &a); err != nil || a.Status != "done" {
			b.Fatalf("send = %+v, %v", a, err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatencies(b, lat)
}

// BenchmarkSendToSurfaced measures the receipt ladder end to end: from
// POST /v1/send on the sender's daemon to the sending session's `receipt`
// event saying the message was surfaced, through a real broker and two
// daemons. The recipient's path shows each message as soon as it arrives:
// a hook (POST /v1/hook, as `claudemesh hook user-prompt-submit` calls it)
// or a channel claim (POST /v1/inbox/surface, as the MCP server makes it
// before its emit). What it leaves out is how long the recipient's model
// takes to reach its next prompt.
//
//	go test -run XXX -bench SendToSurfaced -benchtime 500x .
func BenchmarkSendToSurfaced(b *testing.B) {
	for _, path := range []string{surfacedViaHooks, surfacedViaChannel} {
		b.Run(path, func(b *testing.B) {
			f := newMsgFixture(b, nil)
			a := registerTestSession(b, f.d1, f.me, "alice")
			r := registerTestSession(b, f.d2, f.bob, "bert")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sent, _, err := a.cl.Events(ctx)
			if err != nil {
				b.Fatal(err)
			}
			received, _, err := r.cl.Events(ctx)
			if err != nil {
				b.Fatal(err)
			}
			show := func(inboxID string) error {
				if path == surfacedViaHooks {
					_, err := callIPC(ctx, r.cl, apiHook, HookRequest{Event: hookUserPromptSubmit})
					return err
				}
				_, err := callIPC(ctx, r.cl, apiSurface, SurfaceRequest{Via: surfacedViaChannel, IDs: textList{inboxID}})
				return err
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				text := fmt.Sprintf("benchmark message %d, of a typical length for a chat line", i)
				t0 := time.Now()
				reply, err := callIPC(ctx, a.cl, apiSend, SendRequest{To: r.pub(), Message: text})
				if err != nil {
					b.Fatal(err)
				}
				for shown := false; !shown; {
					select {
					case ev := <-received:
						var d struct {
							ID   string `json:"id"`
							Body string `json:"body"`
						}
						if ev.Kind == eventMessage && json.Unmarshal(ev.Data, &d) == nil && d.Body == text {
							if err := show(d.ID); err != nil {
								b.Fatal(err)
							}
							shown = true
						}
					case <-time.After(testWait):
						b.Fatalf("message %d did not arrive", i)
					}
				}
				for surfaced := false; !surfaced; {
					select {
					case ev := <-sent:
						var d ReceiptEvent
						surfaced = ev.Kind == eventReceipt && json.Unmarshal(ev.Data, &d) == nil && d.ID == reply.ID && d.Ladder.Rung == rungSurfaced
					case <-time.After(testWait):
						b.Fatalf("message %d's surfaced receipt did not come", i)
					}
				}
				lat = append(lat, time.Since(t0))
				if path == surfacedViaHooks {
					// The turn ends: bert is idle again, so the next message
					// is not held for it.
					if _, err := callIPC(ctx, r.cl, apiHook, HookRequest{Event: hookStop}); err != nil {
						b.Fatal(err)
					}
				}
				if path == surfacedViaHooks {
					// The turn ends: bert is idle again, so the next message
					// is not held for it.
					if _, err := callIPC(ctx, r.cl, apiHook, HookRequest{Event: hookStop}); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			reportLatencies(b, lat)
		})
	}
}

// Tests of the event bus and its SSE stream: the per-subscriber demux, slow
// subscribers, and streams ending at shutdown.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// The per-session event demux, rule by rule.
func TestEventFilterTruthTable(t *testing.T) {
	const (
		sA = "sa" // session A's key
		sB = "sb" // session B's key (a sibling of A)
		mM = "mm" // our member key on alpha
	)
	a := EventFilter{SessionPubkey: sA, MeshSlug: "alpha", MemberPubkey: mM}
	noPresence := EventFilter{MeshSlug: "alpha", MemberPubkey: mM}
	msg := func(mesh, kind, to string) Event {
		return Event{Kind: eventMessage, Mesh: mesh, RecipientKind: kind, RecipientPubkey: to}
	}
	cases := []struct {
		name   string
		filter EventFilter
		ev     Event
		want   bool
	}{
		{"no session sees a DM to anyone", EventFilter{}, msg("alpha", recipientSession, sB), true},
		{"no session sees other meshes", EventFilter{}, Event{Kind: eventSystem, Mesh: "beta"}, true},
		{"another mesh's system event", a, Event{Kind: eventSystem, Mesh: "beta"}, false},
		{"another mesh's peer_join", a, Event{Kind: eventPeerJoin, Mesh: "beta"}, false},
		{"another mesh's broker_status", a, Event{Kind: eventBrokerStatus, Mesh: "beta"}, false},
		{"another mesh's message", a, msg("beta", recipientMember, mM), false},
		{"own mesh's peer_join", a, Event{Kind: eventPeerJoin, Mesh: "alpha"}, true},
		{"own mesh's broker_status", a, Event{Kind: eventBrokerStatus, Mesh: "alpha"}, true},
		{"DM to this session", a, msg("alpha", recipientSession, sA), true},
		{"DM to the sibling session", a, msg("alpha", recipientSession, sB), false},
		{"message to the member", a, msg("alpha", recipientMember, mM), true},
		{"message to another member key", a, msg("alpha", recipientMember, "other"), false},
		{"message without recipient", a, msg("alpha", "", ""), true},
		{"unknown recipient kind", a, msg("alpha", "topic", "x"), true},
		{"no presence: session DMs never", noPresence, msg("alpha", recipientSession, sA), false},
		{"no presence: member messages yes", noPresence, msg("alpha", recipientMember, mM), true},
		{"no session sees outbox rows", EventFilter{}, Event{Kind: eventOutbox, Mesh: "alpha"}, true},
		{"no session sees sessions come and go", EventFilter{}, Event{Kind: eventSession, Mesh: "alpha"}, true},
		{"a session never sees outbox rows", a, Event{Kind: eventOutbox, Mesh: "alpha"}, false},
		{"a session never sees sessions come and go", a, Event{Kind: eventSession, Mesh: "alpha"}, false},
		{"own mesh's state change", a, Event{Kind: eventState, Mesh: "alpha"}, true},
		{"another mesh's state change", a, Event{Kind: eventState, Mesh: "beta"}, false},
		{"own mesh's memory", noPresence, Event{Kind: eventMemory, Mesh: "alpha"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.filter.Allows(tc.ev); got != tc.want {
				t.Fatalf("%+v.Allows(%+v) = %v, want %v", tc.filter, tc.ev, got, tc.want)
			}
		})
	}
}

func TestBusDropsSlowSubscriberWithoutBlocking(t *testing.T) {
	b := newBus(2)
	slow := b.Subscribe(EventFilter{})
	fast := b.Subscribe(EventFilter{})
	got := 0
	for i := 0; i < 10; i++ {
		b.Publish(Event{Kind: eventSystem, Mesh: "m"}) // never blocks, whatever slow does
		for len(fast.C) > 0 {
			<-fast.C
			got++
		}
	}
	if got != 10 {
		t.Fatalf("fast subscriber got %d events, want 10", got)
	}
	n := 0
	for range slow.C { // closed after its buffer filled: the loop ends
		n++
	}
	if n != 2 {
		t.Fatalf("slow subscriber drained %d buffered events, want 2", n)
	}
	if b.Subscribers() != 1 {
		t.Fatalf("%d subscribers left, want 1", b.Subscribers())
	}
	b.Close()
	if _, ok := <-fast.C; ok {
		t.Fatal("subscription still open after Close")
	}
}

// The daemon's own stream format through the one SSE parser the CLI and
// the MCP server share.
func TestReadSSEDaemonStream(t *testing.T) {
	stream := ": connected\n\n: keepalive\n\nid: 1\nevent: peer_join\ndata: {\"mesh\":\"a\"}\n\nid: 2\nevent: message\ndata: {\"x\":1}\n\n"
	var got []sseClientEvent
	err := readSSEStream(context.Background(), strings.NewReader(stream), func(e sseClientEvent) error { got = append(got, e); return nil })
	if !errors.Is(err, errSSEStreamEnded) {
		t.Fatalf("readSSEStream = %v, want errSSEStreamEnded", err)
	}
	if len(got) != 2 || got[0].Event != "peer_join" || got[1].ID != "2" || got[1].Data != `{"x":1}` {
		t.Fatalf("readSSEStream = %+v", got)
	}
}

// sseCollector reads one subscriber's stream in the background.
type sseCollector struct {
	ch   <-chan DaemonEvent
	read []DaemonEvent // every event taken off the stream so far
}

// seen is every event the stream has delivered so far, waiting ones too.
func (s *sseCollector) seen() []DaemonEvent {
	for {
		select {
		case ev, ok := <-s.ch:
			if !ok {
				return s.read
			}
			s.read = append(s.read, ev)
		default:
			return s.read
		}
	}
}

func subscribe(t *testing.T, td *testDaemon, token string) *sseCollector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, _, err := td.client(token).Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &sseCollector{ch: ch}
}

// next returns the next event matching keep, failing after testWait.
func (s *sseCollector) next(t *testing.T, what string, keep func(DaemonEvent) bool) DaemonEvent {
	t.Helper()
	deadline := time.After(testWait)
	for {
		select {
		case ev, ok := <-s.ch:
			if !ok {
				t.Fatalf("stream ended waiting for %s", what)
			}
			s.read = append(s.read, ev)
			if keep(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s within %v", what, testWait)
		}
	}
}

func eventData(ev DaemonEvent) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(ev.Data, &m)
	return m
}

// Through a real daemon and broker: session A never sees session B's DM,
// member events reach both, another mesh's system events reach neither,
// and a subscriber without a token sees everything.
func TestSSEDemuxThroughDaemon(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha, fx.beta)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	td.waitLink(t, "beta", LinkOpen)
	ctx := context.Background()
	regA, keyA := registration(t, fx.alpha, "A", os.Getpid())
	regB, keyB := registration(t, fx.alpha, "B", os.Getpid())
	for _, r := range []RegisterRequest{regA, regB} {
		if err := td.client("").RegisterSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both session links open", func() bool {
		return td.sessionLinkState(td.sessions.Resolve(regA.Token)) == LinkOpen &&
			td.sessionLinkState(td.sessions.Resolve(regB.Token)) == LinkOpen
	})
	subA, subB, all := subscribe(t, td, regA.Token), subscribe(t, td, regB.Token), subscribe(t, td, "")

	// Messages are what the inbox publishes; the demux is the bus's.
	member := fx.alpha.Pubkey
	td.bus.Publish(Event{Kind: eventMessage, Mesh: "alpha", RecipientKind: recipientSession, RecipientPubkey: keyB.PublicHex(),
		Data: map[string]any{"id": "dm-to-B", "mesh": "alpha"}})
	td.bus.Publish(Event{Kind: eventMessage, Mesh: "alpha", RecipientKind: recipientSession, RecipientPubkey: keyA.PublicHex(),
		Data: map[string]any{"id": "dm-to-A", "mesh": "alpha"}})
	td.bus.Publish(Event{Kind: eventMessage, Mesh: "alpha", RecipientKind: recipientMember, RecipientPubkey: member,
		Data: map[string]any{"id": "to-member", "mesh": "alpha"}})

	// Real system events from the broker: carol joins beta, then bob alpha.
	connectMember(t, fx.url, fx.carol)
	connectMember(t, fx.url, fx.bob)

	isMsg := func(ev DaemonEvent) bool { return ev.Kind == eventMessage }
	isJoin := func(ev DaemonEvent) bool { return ev.Kind == eventPeerJoin || ev.Kind == eventSystem }

	// The firehose sees all three messages and both joins (the two joins
	// come in on different links, so in either order).
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, eventData(all.next(t, "message for the firehose", isMsg))["id"].(string))
	}
	if strings.Join(ids, ",") != "dm-to-B,dm-to-A,to-member" {
		t.Errorf("firehose got %v, want all three", ids)
	}
	joins := map[string]string{}
	for len(joins) < 2 {
		d := eventData(all.next(t, "joins on the firehose", isJoin))
		joins[d["name"].(string)] = d["mesh"].(string)
	}
	if joins["carol"] != "beta" || joins["bob"] != "alpha" {
		t.Errorf("firehose joins = %v, want carol on beta and bob on alpha", joins)
	}
	// Both joins are on the bus now; a sentinel published after them marks
	// the end of what a session could have been sent.
	td.bus.Publish(Event{Kind: eventSystem, Mesh: "alpha", Data: map[string]any{"mesh": "alpha", "name": "sentinel"}})

	for name, sub := range map[string]*sseCollector{"A": subA, "B": subB} {
		var msgs, seen []string
		for {
			ev := sub.next(t, "events for "+name, func(DaemonEvent) bool { return true })
			d := eventData(ev)
			if ev.Kind == eventMessage {
				msgs = append(msgs, d["id"].(string))
				continue
			}
			if !isJoin(ev) {
				continue // broker_status
			}
			if d["name"] == "sentinel" {
				break
			}
			seen = append(seen, fmt.Sprint(d["name"], "@", d["mesh"]))
		}
		if want := "dm-to-" + name + ",to-member"; strings.Join(msgs, ",") != want {
			t.Errorf("session %s got messages %v, want %s", name, msgs, want)
		}
		if strings.Join(seen, ",") != "bob@alpha" {
			t.Errorf("session %s saw presence events %v, want only bob@alpha", name, seen)
		}
	}
}

// Shutdown reaches open event streams: they end, and the daemon stops.
func TestShutdownEndsEventStreams(t *testing.T) {
	h := newTestHome(t)
	h.writeConfig(t)
	td := startTestDaemon(t, h, nil)
	ch, streamErr, err := td.client("").Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	td.shutdown(t)
	deadline := time.After(testWait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				_ = streamErr()
				if _, err := os.Stat(h.Paths.SocketFile()); err == nil {
					t.Fatal("socket left behind after shutdown")
				}
				return
			}
		case <-deadline:
			t.Fatal("event stream still open after shutdown")
		}
	}
}

// Subscribers counts live subscribers.
func (b *Bus) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

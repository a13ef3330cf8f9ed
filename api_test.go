// Tests of the IPC contract: every route's request type survives the trip
// to the daemon's decoder, and every reply type carries exactly what a real
// daemon answers.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// contractCheck records which routes a test has round-tripped.
type contractCheck struct {
	t       *testing.T
	covered map[string]bool
}

// roundTrip calls ep with in on a real daemon and checks both halves of the
// contract: the daemon's decoder reads back exactly in, and the reply type,
// decoded and encoded again, is the daemon's answer field for field.
func roundTrip[Req, Rep any](cc *contractCheck, cl *DaemonClient, ep ipcEndpoint[Req, Rep], in Req) Rep {
	t := cc.t
	t.Helper()
	cc.covered[ep.method+" "+ep.pattern] = true
	if got := decodedBy(t, ep, in); !reflect.DeepEqual(got, in) {
		t.Fatalf("%s %s: the daemon reads the request as %+v, the client sent %+v", ep.method, ep.pattern, got, in)
	}
	var body any
	if ep.body {
		body = in
	}
	var raw json.RawMessage
	if err := cl.Do(context.Background(), ep.method, requestTarget(ep.pattern, in), body, &raw); err != nil {
		t.Fatalf("%s %s: %v", ep.method, ep.pattern, err)
	}
	var rep Rep
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("%s %s: the reply type cannot read %s: %v", ep.method, ep.pattern, raw, err)
	}
	again, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSONValue(t, raw, again) {
		t.Fatalf("%s %s: the reply type does not carry the daemon's answer\ndaemon: %s\ntyped:  %s", ep.method, ep.pattern, raw, again)
	}
	return rep
}

// decodedBy is in as the daemon's decoder reads it from the request the
// client builds.
func decodedBy[Req, Rep any](t *testing.T, ep ipcEndpoint[Req, Rep], in Req) Req {
	t.Helper()
	var body io.Reader = http.NoBody
	if ep.body {
		data, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(data)
	}
	r := httptest.NewRequest(ep.method, "http://localhost"+requestTarget(ep.pattern, in), body)
	route, params, err := matchRoute(ep.method, r.URL.EscapedPath())
	if err != nil || route.pattern != ep.pattern {
		t.Fatalf("%s %s: the request goes to %v (%v)", ep.method, ep.pattern, route, err)
	}
	got, err := ep.decode(&ipcRequest{Request: r, params: params, maxBody: ep.maxBody})
	if err != nil {
		t.Fatalf("%s %s: the daemon refuses the request: %v", ep.method, ep.pattern, err)
	}
	return got
}

func sameJSONValue(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// Every route but the event stream, on two real daemons sharing a real
// broker: each request and reply type round-trips, and a route added to the
// table without a round trip here fails the test.
func TestEveryRouteRoundTrips(t *testing.T) {
	f := newMsgFixture(t, withTCP)
	cc := &contractCheck{t: t, covered: map[string]bool{}}
	cl, bobCl := f.d1.client(""), f.d2.client("")
	wait := int(testWait / time.Millisecond)

	if v := roundTrip(cc, cl, apiVersion, noRequest{}); v.DaemonVersion != version || v.IPCAPI != "v1" {
		t.Fatalf("version = %+v", v)
	}
	if h := roundTrip(cc, cl, apiHealth, noRequest{}); !h.OK || h.Brokers["alpha"] != string(LinkOpen) || len(h.Links) != 1 {
		t.Fatalf("health = %+v", h)
	}
	if r := roundTrip(cc, cl, apiUIOpen, noRequest{}); !r.Started || !strings.HasPrefix(r.URL, r.Page+"login?code=") {
		t.Fatalf("ui open = %+v", r)
	}
	if r := roundTrip(cc, cl, apiReload, noRequest{}); !r.OK || !reflect.DeepEqual(r.Meshes, []string{"alpha"}) {
		t.Fatalf("reload = %+v", r)
	}

	// A session with presence, and its own view of itself.
	reg, key := registration(t, f.me, "ana", os.Getpid())
	reg.Role, reg.Groups = "lead", textList{"ops"}
	if r := roundTrip(cc, cl, apiRegister, reg); !r.OK || !r.PresenceAccepted || r.TokenPrefix != reg.Token[:8] {
		t.Fatalf("register = %+v", r)
	}
	ana := f.d1.client(reg.Token)
	waitFor(t, "ana's link open", func() bool {
		s := f.d1.sessions.Resolve(reg.Token)
		return s != nil && f.d1.sessionLinkState(s) == LinkOpen
	})
	if me := roundTrip(cc, ana, apiSessionMe, noRequest{}); me.Session.DisplayName != "ana" || me.Session.Presence == nil ||
		me.Session.Presence.SessionPubkey != key.PublicHex() || !reflect.DeepEqual(me.Session.Groups, []string{"ops"}) {
		t.Fatalf("sessions/me = %+v", me)
	}
	if all := roundTrip(cc, cl, apiSessions, noRequest{}); len(all.Sessions) != 1 || all.Sessions[0].Role != "lead" {
		t.Fatalf("sessions = %+v", all)
	}
	waitFor(t, "ana in the peer list", func() bool {
		for _, p := range roundTrip(cc, cl, apiPeers, MeshQuery{Mesh: "alpha"}).Peers {
			if p.Row.Pubkey == key.PublicHex() && p.Mesh == "alpha" && p.Row.DisplayName == "ana" {
				return true
			}
		}
		return false
	})
	if r := roundTrip(cc, cl, apiMembers, MeshQuery{Mesh: "alpha"}); len(r.Members) != 2 || len(r.Partial) != 0 || r.Members[0].Mesh != "alpha" {
		t.Fatalf("members = %+v", r)
	}
	summary := "reviewing"
	if p := roundTrip(cc, ana, apiProfile, ProfileRequest{Summary: &summary}); !p.OK || p.Via != linkSession ||
		!reflect.DeepEqual(p.Applied, []string{"summary"}) {
		t.Fatalf("profile = %+v", p)
	}

	// Shared state.
	if r := roundTrip(cc, cl, apiStateSet, StateSetRequest{Key: "build", Value: json.RawMessage(`{"green":true}`), Mesh: "alpha"}); !r.OK || r.Mesh != "alpha" {
		t.Fatalf("state set = %+v", r)
	}
	key1 := "build"
	if r := roundTrip(cc, cl, apiState, StateQuery{Key: &key1}); r.State == nil || string(r.State.Row.Value) != `{"green":true}` || r.State.Mesh != "alpha" {
		t.Fatalf("state get = %+v", r)
	}
	if r := roundTrip(cc, cl, apiState, StateQuery{Mesh: "alpha"}); r.Entries == nil || len(*r.Entries) != 1 || (*r.Entries)[0].Row.Key != "build" {
		t.Fatalf("state list = %+v", r)
	}

	// Memory.
	mem := roundTrip(cc, cl, apiRemember, RememberRequest{Content: "the staging password rotates on mondays", Tags: []string{"ops"}, Mesh: "alpha"})
	if mem.ID == "" || mem.Mesh != "alpha" {
		t.Fatalf("remember = %+v", mem)
	}
	if r := roundTrip(cc, cl, apiRecall, RecallQuery{Q: "staging"}); len(r.Matches) != 1 || r.Matches[0].Row.ID != mem.ID ||
		!reflect.DeepEqual(r.Matches[0].Row.Tags, []string{"ops"}) {
		t.Fatalf("recall = %+v", r)
	}
	if r := roundTrip(cc, cl, apiForget, ForgetRequest{ID: mem.ID, Mesh: "alpha"}); !r.OK || r.ID != mem.ID {
		t.Fatalf("forget = %+v", r)
	}

	// Skills.
	share := ShareSkillRequest{Name: "deploy", Description: "ship it", Instructions: "run make deploy", Tags: []string{"ops"},
		Manifest: json.RawMessage(`{"version":1}`), Mesh: "alpha"}
	if r := roundTrip(cc, cl, apiShareSkill, share); !r.OK || r.Name != "deploy" || r.Action == "" {
		t.Fatalf("share skill = %+v", r)
	}
	if r := roundTrip(cc, cl, apiSkills, SkillsQuery{Query: "deploy"}); len(r.Skills) != 1 || r.Skills[0].Row.Description != "ship it" {
		t.Fatalf("skills = %+v", r)
	}
	if r := roundTrip(cc, cl, apiSkill, SkillRequest{Name: "deploy"}); r.Skill.Row.Instructions != "run make deploy" || r.Skill.Mesh != "alpha" {
		t.Fatalf("skill = %+v", r)
	}
	if r := roundTrip(cc, cl, apiRemoveSkill, SkillRequest{Name: "deploy", Mesh: "alpha"}); !r.OK || r.Action != "removed" {
		t.Fatalf("remove skill = %+v", r)
	}

	// A DM from ana to bob's daemon, its outbox row and bob's inbox row.
	events := subscribe(t, f.d2, "")
	sent := roundTrip(cc, ana, apiSend, SendRequest{To: f.bob.Pubkey, Message: "hello bob", Priority: priorityNow,
		Meta: json.RawMessage(`{"k":"v"}`), ClientMessageID: "c-contract", WaitMs: wait, Presence: true})
	if sent.Status != "done" || deref(sent.BrokerMessageID) == "" || deref(sent.Duplicate) || sent.Recipient == nil || !sent.Recipient.Online {
		t.Fatalf("send = %+v", sent)
	}
	ev := events.next(t, "the DM's message event", messageWith("hello bob"))
	var msg MessageEvent
	if err := json.Unmarshal(ev.Data, &msg); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(msg)
	if !sameJSONValue(t, ev.Data, again) || msg.ClientMessageID != "c-contract" || string(msg.BrokerMessageID) != deref(sent.BrokerMessageID) {
		t.Fatalf("message event %s reads as %s", ev.Data, again)
	}
	dead := roundTrip(cc, cl, apiSend, SendRequest{To: mustNewKeypair().PublicHex(), Message: "nobody", WaitMs: wait})
	if dead.Status != "dead" || deref(dead.LastError) == "" {
		t.Fatalf("send to an unknown key = %+v", dead)
	}
	limit := 10
	if r := roundTrip(cc, cl, apiOutbox, OutboxQuery{Status: "failed", Limit: &limit}); len(r.Items) != 1 || r.Items[0].ID != dead.ID {
		t.Fatalf("outbox = %+v", r)
	}
	if r := roundTrip(cc, cl, apiMessage, MessageQuery{ID: dead.ID}); r.Message.ID != dead.ID || r.Message.Ladder == nil || r.Message.Ladder.Rung != rungDead {
		t.Fatalf("message = %+v", r)
	}
	if r := roundTrip(cc, cl, apiMetrics, noRequest{}); len(r.SendToSurfaced.Counts) != len(latencyBoundsMs)+1 {
		t.Fatalf("metrics = %+v", r)
	}
	if r := roundTrip(cc, cl, apiOutboxRequeue, RequeueRequest{ID: dead.ID, NewClientMessageID: "c-again", AbortedBy: "test"}); r.AbortedRowID != dead.ID ||
		r.NewClientMessageID != "c-again" || r.NewRowID == "" {
		t.Fatalf("requeue = %+v", r)
	}
	inbox := roundTrip(cc, bobCl, apiInbox, InboxQuery{Mesh: "alpha", UnreadOnly: true, Limit: &limit, MarkSeen: ptr(false)})
	if len(inbox.Items) != 1 || deref(inbox.Items[0].Body) != "hello bob" || inbox.Items[0].SeenAt != "" || inbox.MarkedSeen != 0 {
		t.Fatalf("inbox = %+v", inbox)
	}
	// History and search: bob's daemon holds the DM it received.
	if r := roundTrip(cc, bobCl, apiHistory, HistoryQuery{Mesh: "alpha", Limit: &limit}); len(r.Messages) != 1 ||
		deref(r.Messages[0].Body) != "hello bob" || r.Messages[0].Direction != historyIn || r.Next != "" {
		t.Fatalf("history = %+v", r)
	}
	if r := roundTrip(cc, bobCl, apiSearch, SearchQuery{Q: "hel", Mesh: "alpha", From: "ana", Limit: &limit}); len(r.Messages) != 1 ||
		r.Messages[0].Snippet != snippetOpen+"hello"+snippetClose+" bob" {
		t.Fatalf("search = %+v", r)
	}

	row := inbox.Items[0].ID
	if r := roundTrip(cc, bobCl, apiSurface, SurfaceRequest{Via: surfacedViaChannel, IDs: textList{row}}); len(r.Items) != 1 ||
		r.Items[0].ID != row || r.Items[0].SurfacedVia != surfacedViaChannel || r.Items[0].SurfacedConfirmed {
		t.Fatalf("surface = %+v", r)
	}
	if r := roundTrip(cc, bobCl, apiUnsurface, UnsurfaceRequest{IDs: textList{row}}); r.Released != 1 {
		t.Fatalf("unsurface = %+v", r)
	}
	plain := newUUID()
	if r := roundTrip(cc, cl, apiHook, HookRequest{Event: hookSessionStart, ClaudeSessionID: plain, ClaudePid: os.Getpid(), Cwd: "/tmp"}); !r.Registered ||
		r.Session.SessionID != plain || r.Session.Origin != sessionOriginHooks || r.Welcome == nil {
		t.Fatalf("hook = %+v", r)
	}
	if r := roundTrip(cc, cl, apiHookWait, HookWaitRequest{ClaudeSessionID: plain, ClaudePid: os.Getpid(), TimeoutMs: 1}); r.Outcome != waitTimeout {
		t.Fatalf("hook wait = %+v", r)
	}
	asPlain := newDaemonClientAs(f.h1.Paths.SocketFile(), callerIdentity{ClaudeSessionID: plain})
	if r := roundTrip(cc, asPlain, apiSessionMCP, MCPReport{ProtocolVersion: "2025-11-25", ClientName: "claude-code", Channel: true}); r.Surfacing != surfacedViaHooks {
		t.Fatalf("mcp report = %+v, want hooks (a hook ran; no event stream is open)", r)
	}
	if r := roundTrip(cc, asPlain, apiWelcome, WelcomeClaimRequest{}); r.Claimed || r.Via != surfacedViaHooks {
		t.Fatalf("welcome claim = %+v, want the session-start hook's", r)
	}
	if r := roundTrip(cc, bobCl, apiInboxSeen, InboxSeenRequest{IDs: textList{row}}); r.MarkedSeen != 1 {
		t.Fatalf("inbox seen = %+v", r)
	}
	if r := roundTrip(cc, bobCl, apiInboxDelete, InboxDeleteRequest{ID: row}); r.Removed != 1 || r.ID != row {
		t.Fatalf("inbox delete = %+v", r)
	}
	if r := roundTrip(cc, bobCl, apiInboxFlush, InboxFlushQuery{All: true}); r.Removed != 0 {
		t.Fatalf("inbox flush = %+v", r)
	}

	if r := roundTrip(cc, ana, apiDeregister, DeregisterRequest{Token: reg.Token}); !r.OK || r.TokenPrefix != reg.Token[:8] {
		t.Fatalf("deregister = %+v", r)
	}

	for _, rt := range ipcRoutes {
		if rt.stream == nil && !cc.covered[rt.method+" "+rt.pattern] {
			t.Errorf("%s %s has no round trip in this test", rt.method, rt.pattern)
		}
	}
}

// The query codec: what the client writes is what the daemon reads, for
// each kind of field, and a bad number is the route's 400.
func TestRequestTargetCodec(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     InboxQuery
		target string
	}{
		{"nothing set", InboxQuery{}, "/v1/inbox"},
		{"strings and a true bool", InboxQuery{Mesh: "a b", UnreadOnly: true}, "/v1/inbox?mesh=a+b&unread_only=true"},
		{"pointers are sent when set, even to zero values", InboxQuery{Limit: ptr(0), MarkSeen: ptr(false)}, "/v1/inbox?limit=0&mark_seen=false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := requestTarget(apiInbox.pattern, tc.in); got != tc.target {
				t.Fatalf("requestTarget(%+v) = %q, want %q", tc.in, got, tc.target)
			}
			if got := decodedBy(t, apiInbox, tc.in); !reflect.DeepEqual(got, tc.in) {
				t.Fatalf("decoded %+v, want %+v", got, tc.in)
			}
		})
	}
	if got := requestTarget(apiSkill.pattern, SkillRequest{Name: "a/b c"}); got != "/v1/skills/a%2Fb%20c" {
		t.Fatalf("path field = %q", got)
	}
	var q InboxQuery
	err := decodeTarget(nil, map[string][]string{"limit": {"ten"}}, &q)
	if ae, ok := err.(*apiError); !ok || ae.code != "invalid_limit" || ae.status != http.StatusBadRequest {
		t.Fatalf("limit=ten: %v, want 400 invalid_limit", err)
	}
	if err := decodeTarget(nil, map[string][]string{"mark_seen": {"yes"}}, &q); err != nil || q.MarkSeen == nil || !*q.MarkSeen {
		t.Fatalf("mark_seen=yes reads as %v (%v): anything but false marks seen", q.MarkSeen, err)
	}
	if !strings.HasPrefix(requestTarget(apiOutbox.pattern, OutboxQuery{Limit: ptr(3)}), "/v1/outbox?limit=3") {
		t.Fatal("an *int query field is not sent")
	}
}

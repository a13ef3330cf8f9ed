// Grants through a real broker and real daemons: bob sets his grants over
// the signed HTTP route, alice sends from her session or her member link,
// and what reaches bob's daemon (and what the broker routed to him) is
// checked case by case.
package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// setGrantsVia makes m's grants exactly want, through the route.
func setGrantsVia(t *testing.T, m Mesh, want grantMap) {
	t.Helper()
	call := func(req GrantsRequest) GrantsResponse {
		t.Helper()
		var resp GrantsResponse
		if err := memberPost(context.Background(), m, "grants", &req, &resp); err != nil {
			t.Fatalf("grants %s %s %v: %v", req.Op, shortKey(req.Peer), req.Caps, err)
		}
		return resp
	}
	for _, e := range call(GrantsRequest{Op: grantOpList}).Grants {
		call(GrantsRequest{Op: grantOpReset, Peer: e.Key})
	}
	var last GrantsResponse
	for key, caps := range want {
		last = call(GrantsRequest{Op: grantOpRevoke, Peer: key})
		if len(caps) > 0 {
			last = call(GrantsRequest{Op: grantOpGrant, Peer: key, Caps: caps})
		}
	}
	if len(want) > 0 && len(last.Grants) != len(want) {
		t.Fatalf("grants now %+v, want %v", last.Grants, want)
	}
}

// routeRecorder is the test's real store (SQLite or PostgreSQL),
// remembering the delivery keys each stored message was written with:
// deliveries leave the store once acked, and a test still wants to know
// where a message went.
type routeRecorder struct {
	brokerStore
	mu     sync.Mutex
	routes map[string][]string // by message id
}

// newRouteRecorder opens the test's store for a broker to own.
func newRouteRecorder(t *testing.T) *routeRecorder {
	t.Helper()
	var opts BrokerOptions
	testStoreOf(t).place(t, &opts)
	var s brokerStore
	var err error
	if opts.StoreURL != "" {
		s, err = openPostgresBrokerStore(context.Background(), opts.StoreURL, "replica-"+newID()[:8])
	} else {
		s, err = openSQLiteBrokerStore(opts.DataDir)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &routeRecorder{brokerStore: s, routes: map[string][]string{}}
}

func (r *routeRecorder) WriteBatch(ctx context.Context, appends []appendOp, marks []deliveryMark) ([]appendResult, int, error) {
	res, n, err := r.brokerStore.WriteBatch(ctx, appends, marks)
	if err == nil {
		r.mu.Lock()
		for _, a := range res {
			if !a.Dup && a.Err == nil {
				r.routes[a.ID] = append([]string(nil), a.Recipients...)
			}
		}
		r.mu.Unlock()
	}
	return res, n, err
}

// routedTo lists the keys the broker wrote deliveries for, for one message.
func routedTo(t *testing.T, r *routeRecorder, messageID string) []string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := slices.Clone(r.routes[messageID])
	slices.Sort(keys)
	return keys
}

// The six cases: a member entry wins, a session entry applies only to the
// session key it names and only when the member has no entry, an empty
// entry blocks, and a blocked DM dies in the sender's outbox with the
// broker's reason while a blocked broadcast just skips the recipient.
func TestGrantsEnforcedAtRouting(t *testing.T) { forEachStore(t, testGrantsEnforcedAtRouting) }

func testGrantsEnforcedAtRouting(t *testing.T) {
	opts := msgBrokerOptions()
	rec := newRouteRecorder(t)
	opts.Store = rec
	f := newMsgFixtureWith(t, opts, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	bert := registerTestSession(t, f.d2, f.bob, "bert")
	bobKeys := []string{f.bob.Pubkey, bert.pub()}
	member, session := f.me.Pubkey, a.pub()

	cases := []struct {
		name          string
		grants        grantMap // bob's
		onMemberLink  bool     // alice sends from her member link, not her session
		dm, broadcast bool     // whether each reaches bob
	}{
		{"no grants: delivered", nil, false, true, true},
		{"member [read]: DM blocked even via a session", grantMap{member: {capRead}}, false, false, false},
		{"member []: DM and broadcast blocked", grantMap{member: {}}, false, false, false},
		{"session [dm]: DM delivered, broadcast blocked", grantMap{session: {capDM}}, false, true, false},
		{"member [] wins over session [dm, broadcast]", grantMap{member: {}, session: {capDM, capBroadcast}}, false, false, false},
		{"session [dm], sent on the member link: the defaults apply", grantMap{session: {capDM}}, true, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			setGrantsVia(t, f.bob, tc.grants)
			from := a.cl
			if tc.onMemberLink {
				from = f.d1.client("")
			}
			dmText, allText := "dm "+tc.name, "broadcast "+tc.name

			dm := ipcSend(t, from, map[string]any{"to": f.bob.Pubkey, "message": dmText, "wait_ms": int(testWait.Milliseconds())})
			if tc.dm {
				if dm.Status != outboxDone {
					t.Fatalf("DM = %+v, want done", dm)
				}
				waitFor(t, "the DM in bob's inbox", func() bool { return countBody(inboxItems(t, f.d2.client("")), dmText) == 1 })
			} else {
				if dm.Status != outboxDead || dm.LastError == nil || !strings.Contains(*dm.LastError, "blocked by recipient grants") ||
					!strings.Contains(*dm.LastError, "bob grants you: "+capsLabel(tc.grants[member])) {
					t.Fatalf("DM = %+v (last_error %q), want dead with the recipient's grants", dm, deref(dm.LastError))
				}
				var rows OutboxReply
				if err := from.Do(context.Background(), "GET", ipcPath("/v1/outbox", "status", "failed"), nil, &rows); err != nil {
					t.Fatal(err)
				}
				i := slices.IndexFunc(rows.Items, func(r outboxView) bool { return r.ID == dm.ID })
				if i < 0 || rows.Items[i].Attempts != 1 {
					t.Fatalf("failed rows = %+v: want the blocked DM, tried once (no retry)", rows.Items)
				}
			}

			all := ipcSend(t, from, map[string]any{"to": "*", "message": allText, "wait_ms": int(testWait.Milliseconds())})
			if all.Status != outboxDone || all.BrokerMessageID == nil {
				t.Fatalf("broadcast = %+v, want done (a blocked recipient is skipped, the send is not refused)", all)
			}
			routed := routedTo(t, rec, *all.BrokerMessageID)
			toBob := slices.ContainsFunc(routed, func(k string) bool { return slices.Contains(bobKeys, k) })
			if toBob != tc.broadcast {
				t.Fatalf("broadcast routed to %v; reaches bob = %v, want %v", routed, toBob, tc.broadcast)
			}
			if tc.broadcast {
				waitFor(t, "the broadcast in bob's inbox", func() bool { return countBody(inboxItems(t, f.d2.client("")), allText) == 1 })
			}
		})
	}
}

// The route: only signed requests of members, only one's own grants,
// names and prefixes resolved, bad input refused with the reason.
func TestGrantsRoute(t *testing.T) { forEachStore(t, testGrantsRoute) }

func testGrantsRoute(t *testing.T) {
	b, url := startTestBrokerWith(t, msgBrokerOptions())
	alice := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, alice, "bob", roleMember)
	carol := addTestMember(t, b, alice, "carol", roleMember)
	addTestMember(t, b, alice, "carol", roleMember) // two members share a name
	sess := mustNewKeypair()
	connectSession(t, url, bob, sess, "bob-frontend")
	ctx := context.Background()

	post := func(m Mesh, req GrantsRequest) (GrantsResponse, error) {
		var resp GrantsResponse
		err := memberPost(ctx, m, "grants", &req, &resp)
		return resp, err
	}
	refusal := func(err error) (int, string) {
		var be *brokerError
		if !errors.As(err, &be) {
			t.Fatalf("err = %v, want a broker refusal", err)
		}
		return be.Status, be.Code
	}

	resp, err := post(alice, GrantsRequest{Op: grantOpGrant, Peer: "bob", Caps: []string{capMemory}})
	if err != nil || resp.Changed == nil || resp.Changed.Key != bob.Pubkey || resp.Changed.Kind != grantKindMember ||
		!slices.Equal(resp.Changed.Caps, []string{capRead, capDM, capBroadcast, capStateRead, capMemory}) {
		t.Fatalf("grant bob memory = %+v, %v; want bob's entry to be the defaults plus memory", resp.Changed, err)
	}
	resp, err = post(alice, GrantsRequest{Op: grantOpRevoke, Peer: "bob-frontend", Caps: []string{capBroadcast}})
	if err != nil || resp.Changed.Key != sess.PublicHex() || resp.Changed.Kind != grantKindSession || resp.Changed.Name != "bob-frontend" {
		t.Fatalf("revoke bob-frontend broadcast = %+v, %v; want the session's entry", resp.Changed, err)
	}
	resp, err = post(alice, GrantsRequest{Op: grantOpRevoke, Peer: carol.Pubkey[:12]})
	if err != nil || resp.Changed.Key != carol.Pubkey || len(resp.Changed.Caps) != 0 {
		t.Fatalf("revoke <carol prefix> = %+v, %v; want carol blocked", resp.Changed, err)
	}
	resp, err = post(alice, GrantsRequest{Op: grantOpList})
	if err != nil || len(resp.Grants) != 3 || resp.Grants[0].Name != "bob" || resp.Grants[2].Kind != grantKindSession ||
		!slices.Equal(resp.Defaults, defaultCapabilities) {
		t.Fatalf("list = %+v, %v", resp, err)
	}
	resp, err = post(alice, GrantsRequest{Op: grantOpReset, Peer: carol.Pubkey})
	if err != nil || !resp.Changed.Default || !slices.Equal(resp.Changed.Caps, defaultCapabilities) || len(resp.Grants) != 2 {
		t.Fatalf("reset carol = %+v, %v", resp, err)
	}
	// Another member's list is its own.
	if resp, err := post(bob, GrantsRequest{Op: grantOpList}); err != nil || len(resp.Grants) != 0 {
		t.Fatalf("bob's list = %+v, %v; want empty", resp, err)
	}

	refused := []struct {
		name   string
		as     Mesh
		req    GrantsRequest
		status int
		code   string
	}{
		{"own member", alice, GrantsRequest{Op: grantOpRevoke, Peer: "alice"}, http.StatusBadRequest, codeInvalid},
		{"own session", bob, GrantsRequest{Op: grantOpRevoke, Peer: "bob-frontend"}, http.StatusBadRequest, codeInvalid},
		{"ambiguous name", alice, GrantsRequest{Op: grantOpRevoke, Peer: "carol"}, http.StatusBadRequest, codeInvalid},
		{"no such peer", alice, GrantsRequest{Op: grantOpRevoke, Peer: "zed"}, http.StatusNotFound, codeNotFound},
		{"unknown capability", alice, GrantsRequest{Op: grantOpGrant, Peer: "bob", Caps: []string{"write"}}, http.StatusBadRequest, codeInvalid},
		{"grant of nothing", alice, GrantsRequest{Op: grantOpGrant, Peer: "bob"}, http.StatusBadRequest, codeInvalid},
		{"unknown op", alice, GrantsRequest{Op: "block", Peer: "bob"}, http.StatusBadRequest, codeInvalid},
		{"not a member", Mesh{MeshID: alice.MeshID, Pubkey: mustNewKeypair().PublicHex(), BrokerURL: url}, GrantsRequest{Op: grantOpList}, http.StatusForbidden, codeForbidden},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.as
			if m.SecretKey == "" { // a key of its own that the mesh never saw
				kp := mustNewKeypair()
				m.Pubkey, m.SecretKey = kp.PublicHex(), kp.SecretHex()
			}
			_, err := post(m, tc.req)
			if status, code := refusal(err); status != tc.status || code != tc.code {
				t.Fatalf("refusal = %d %s, want %d %s (%v)", status, code, tc.status, tc.code, err)
			}
		})
	}

	// A replayed request is refused, and so is a tampered one.
	req := GrantsRequest{Op: grantOpList}
	kp, _ := alice.Keypair()
	path := "/cli/mesh/" + alice.MeshID + "/grants"
	if err := signMemberRequest(kp, path, &req, time.Now()); err != nil {
		t.Fatal(err)
	}
	base, _ := brokerHTTPBase(url)
	var out GrantsResponse
	if err := postBroker(ctx, base, path, nil, req, &out); err != nil {
		t.Fatal(err)
	}
	if status, code := refusal(postBroker(ctx, base, path, nil, req, &out)); status != http.StatusConflict || code != codeReplayed {
		t.Fatalf("replay = %d %s, want 409 %s", status, code, codeReplayed)
	}
	req.Op = grantOpReset
	if status, code := refusal(postBroker(ctx, base, path, nil, req, &out)); status != http.StatusUnauthorized || code != codeBadSignature {
		t.Fatalf("tampered = %d %s, want 401 %s", status, code, codeBadSignature)
	}
}

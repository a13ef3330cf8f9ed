// Tests of the channel notifications built from daemon events: meta is
// strings only, previews are bounded, the welcome says what it should.
package main

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// channelMetaKey is the rule for channel meta keys (letters, digits, underscore), as the
// tests check it (the product uses isChannelMetaKey).
var channelMetaKey = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// assertWireMeta checks a notification the way Claude Code's schema does:
// encoded and decoded again, meta must be a record of strings with
// identifier keys.
func assertWireMeta(t *testing.T, n channelNotification) {
	t.Helper()
	data, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	var wire struct {
		Content any            `json:"content"`
		Meta    map[string]any `json:"meta"`
	}
	if err := json.Unmarshal(data, &wire); err != nil {
		t.Fatal(err)
	}
	if _, ok := wire.Content.(string); !ok {
		t.Errorf("content %v is not a string", wire.Content)
	}
	if wire.Meta == nil {
		t.Errorf("meta missing in %s", data)
	}
	for k, v := range wire.Meta {
		if !channelMetaKey.MatchString(k) {
			t.Errorf("meta key %q does not match [A-Za-z0-9_]+", k)
		}
		if _, ok := v.(string); !ok {
			t.Errorf("meta %s = %v (%T), want a string", k, v, v)
		}
	}
	if err := checkChannelMeta(n.Meta); err != nil {
		t.Errorf("checkChannelMeta = %v", err)
	}
}

func strPtr(s string) *string { return &s }

func TestChannelFromMessage(t *testing.T) {
	base := MessageEvent{
		ID: "row-1", Mesh: "team", ClientMessageID: "cmid-1", BrokerMessageID: "bmid-1",
		SenderPubkey:       "5e55100000000000000000000000000000000000000000000000000000000000",
		SenderMemberPubkey: "3e3b3e0000000000000000000000000000000000000000000000000000000000",
		SenderName:         "bob", Priority: "next", Body: strPtr("is staging up?"), CreatedAt: "2026-05-04T10:00:00Z",
		RecipientPubkey: "aa", RecipientKind: "session",
	}
	baseMeta := func() map[string]string {
		return map[string]string{
			"from_id": string(base.SenderMemberPubkey), "from_pubkey": string(base.SenderMemberPubkey),
			"from_session_pubkey": base.SenderPubkey, "from_name": "bob", "mesh_slug": "team",
			"priority": "next", "message_id": "bmid-1", "client_message_id": "cmid-1",
		}
	}
	cases := []struct {
		name        string
		edit        func(e *MessageEvent)
		wantContent string
		editMeta    func(m map[string]string)
	}{
		{"plain DM", nil, "bob: is staging up?", nil},
		{"urgent", func(e *MessageEvent) { e.Priority = "now" }, "[URGENT] bob: is staging up?",
			func(m map[string]string) { m["priority"] = "now" }},
		{"low", func(e *MessageEvent) { e.Priority = "low" }, "[low] bob: is staging up?",
			func(m map[string]string) { m["priority"] = "low" }},
		{"priority defaults to next", func(e *MessageEvent) { e.Priority = "" }, "bob: is staging up?", nil},
		{"decrypt failed", func(e *MessageEvent) { e.Body = nil }, "bob: (decrypt failed)", nil},
		{"empty body is not a decrypt failure", func(e *MessageEvent) { e.Body = strPtr("") }, "bob: ", nil},
		{"topic", func(e *MessageEvent) { e.Topic = "deploys" }, "bob (#deploys): is staging up?",
			func(m map[string]string) { m["topic"] = "deploys" }},
		{"reply and subtype", func(e *MessageEvent) { e.ReplyToID = "bmid-0"; e.Subtype = "reminder" }, "bob: is staging up?",
			func(m map[string]string) { m["reply_to_id"] = "bmid-0"; m["subtype"] = "reminder" }},
		{"no member key: session key identifies", func(e *MessageEvent) { e.SenderMemberPubkey = "" }, "bob: is staging up?",
			func(m map[string]string) { m["from_id"] = base.SenderPubkey; m["from_pubkey"] = base.SenderPubkey }},
		{"no broker id: row id", func(e *MessageEvent) { e.BrokerMessageID = "" }, "bob: is staging up?",
			func(m map[string]string) { m["message_id"] = "row-1" }},
		{"no name", func(e *MessageEvent) { e.SenderName = "" }, "unknown: is staging up?",
			func(m map[string]string) { m["from_name"] = "unknown" }},
		{"multi-line body kept whole", func(e *MessageEvent) { e.Body = strPtr("line 1\nline 2") }, "bob: line 1\nline 2", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := base
			if tc.edit != nil {
				tc.edit(&ev)
			}
			want := baseMeta()
			if tc.editMeta != nil {
				tc.editMeta(want)
			}
			got := channelFromMessage(ev)
			if got.Content != tc.wantContent {
				t.Errorf("content = %q, want %q", got.Content, tc.wantContent)
			}
			if !reflect.DeepEqual(got.Meta, want) {
				t.Errorf("meta = %v\nwant %v", got.Meta, want)
			}
			assertWireMeta(t, got)
		})
	}
}

func TestChannelFromSystem(t *testing.T) {
	cases := []struct {
		name        string
		kind, data  string
		wantContent string
		wantMeta    map[string]string
	}{
		{"peer joined with groups", "peer_join",
			`{"ts":"x","mesh":"team","event":"peer_joined","name":"carol","pubkey":"c4r01aaaaaaa","groups":[{"name":"frontend","role":"lead"},{"name":"all"}]}`,
			`[system] Peer "carol" (c4r01aaa) [@frontend:lead, @all] joined the mesh`,
			map[string]string{"kind": "system", "event": "peer_joined", "mesh_slug": "team", "peer_name": "carol",
				"peer_pubkey": "c4r01aaaaaaa", "peer_groups": `["@frontend:lead","@all"]`}},
		{"groups as strings", "peer_join",
			`{"mesh":"team","event":"peer_joined","name":"dan","pubkey":"d","groups":["@ops","qa"]}`,
			`[system] Peer "dan" (d) [@ops, @qa] joined the mesh`,
			map[string]string{"kind": "system", "event": "peer_joined", "mesh_slug": "team", "peer_name": "dan",
				"peer_pubkey": "d", "peer_groups": `["@ops","@qa"]`}},
		{"peer left", "peer_leave", `{"mesh":"team","event":"peer_left","name":"carol","pubkey":"c4r01aaaaaaa"}`,
			`[system] Peer "carol" (c4r01aaa) left the mesh`,
			map[string]string{"kind": "system", "event": "peer_left", "mesh_slug": "team", "peer_name": "carol", "peer_pubkey": "c4r01aaaaaaa"}},
		{"peer returned", "system",
			`{"mesh":"team","event":"peer_returned","name":"erin","pubkey":"e","groups":[],"lastSeenAt":"2026-05-03T22:00:00Z","summary":"fixing the build"}`,
			`[system] Peer "erin" (e) is back in the mesh — last seen 2026-05-03T22:00:00Z · "fixing the build"`,
			map[string]string{"kind": "system", "event": "peer_returned", "mesh_slug": "team", "peer_name": "erin", "peer_pubkey": "e",
				"peer_last_seen_at": "2026-05-03T22:00:00Z", "peer_summary": "fixing the build"}},
		{"peer hidden", "system", `{"mesh":"team","event":"peer_hidden","name":"fay","pubkey":"f"}`,
			`[system] Peer "fay" (f) is now hidden`,
			map[string]string{"kind": "system", "event": "peer_hidden", "mesh_slug": "team", "peer_name": "fay", "peer_pubkey": "f"}},
		{"unknown system event shows its data", "system",
			`{"ts":"2026","mesh":"team","event":"mcp_restored","serverName":"db","hostedBy":"<ops>"}`,
			`[system] mcp_restored: {"hostedBy":"<ops>","serverName":"db"}`,
			map[string]string{"kind": "system", "event": "mcp_restored", "mesh_slug": "team"}},
		{"undecodable data", "peer_join", `{"name":5}`, `[system] peer_join: {"name":5}`,
			map[string]string{"kind": "system", "event": "peer_join", "mesh_slug": ""}},
		{"not JSON", "system", `oops`, `[system] system: oops`,
			map[string]string{"kind": "system", "event": "system", "mesh_slug": ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := channelFromSystem(tc.kind, []byte(tc.data))
			if got.Content != tc.wantContent {
				t.Errorf("content = %q\nwant %q", got.Content, tc.wantContent)
			}
			if !reflect.DeepEqual(got.Meta, tc.wantMeta) {
				t.Errorf("meta = %v\nwant %v", got.Meta, tc.wantMeta)
			}
			assertWireMeta(t, got)
		})
	}
}

func TestChannelSystemPreviewIsBounded(t *testing.T) {
	data := `{"event":"x","blob":"` + strings.Repeat("é", 1000) + `"}`
	got := channelFromSystem("system", []byte(data))
	body := strings.TrimPrefix(got.Content, "[system] x: ")
	if n := len([]rune(body)); n != channelSystemPreview+1 || !strings.HasSuffix(body, "…") {
		t.Errorf("preview has %d runes (%q…), want %d plus an ellipsis", n, body[:20], channelSystemPreview)
	}
}

func TestChannelFromEvent(t *testing.T) {
	cases := []struct {
		name      string
		ev        sseClientEvent
		wantOK    bool
		wantRow   string
		wantErr   bool
		wantStart string
	}{
		{"message", sseClientEvent{Event: "message", Data: `{"id":"r9","sender_name":"bob","body":"hi","priority":"now","topic":null,"sender_member_pubkey":null}`},
			true, "r9", false, "[URGENT] bob: hi"},
		{"message without row id", sseClientEvent{Event: "message", Data: `{"sender_name":"bob"}`}, false, "", true, ""},
		{"message not JSON", sseClientEvent{Event: "message", Data: `{`}, false, "", true, ""},
		{"peer_join", sseClientEvent{Event: "peer_join", Data: `{"event":"peer_joined","name":"x","pubkey":"p"}`}, true, "", false, "[system] Peer"},
		{"peer_leave", sseClientEvent{Event: "peer_leave", Data: `{"event":"peer_left","name":"x","pubkey":"p"}`}, true, "", false, "[system] Peer"},
		{"system", sseClientEvent{Event: "system", Data: `{"event":"peer_visible","name":"x","pubkey":"p"}`}, true, "", false, "[system] Peer"},
		{"unsurfaced", sseClientEvent{Event: "unsurfaced", Data: `{"id":"o1","message_id":"m1","mesh":"team","text":"Your message to bob (msg m1, sent 10m0s ago) has not reached bob's machine yet"}`},
			true, "", false, "[system] Your message to bob"},
		{"unsurfaced without text", sseClientEvent{Event: "unsurfaced", Data: `{"id":"o1"}`}, false, "", true, ""},
		{"broker_status is not shown", sseClientEvent{Event: "broker_status", Data: `{"mesh":"team","status":"open"}`}, false, "", false, ""},
		{"unknown kind", sseClientEvent{Event: "future_kind", Data: `{}`}, false, "", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, row, ok, err := channelFromEvent(tc.ev)
			if (err != nil) != tc.wantErr || ok != tc.wantOK || row != tc.wantRow {
				t.Fatalf("channelFromEvent(%+v) = row %q ok %v err %v, want row %q ok %v err %v",
					tc.ev, row, ok, err, tc.wantRow, tc.wantOK, tc.wantErr)
			}
			if ok {
				if !strings.HasPrefix(n.Content, tc.wantStart) {
					t.Errorf("content = %q, want prefix %q", n.Content, tc.wantStart)
				}
				assertWireMeta(t, n)
			}
		})
	}
}

func TestCheckChannelMeta(t *testing.T) {
	cases := []struct {
		name string
		meta map[string]string
		ok   bool
	}{
		{"identifiers", map[string]string{"from_name": "x", "A1": "y"}, true},
		{"nil", nil, true},
		{"dash", map[string]string{"from-name": "x"}, false},
		{"dot", map[string]string{"a.b": "x"}, false},
		{"empty key", map[string]string{"": "x"}, false},
		{"space", map[string]string{"a b": "x"}, false},
		{"bad UTF-8 value", map[string]string{"a": "\xff"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkChannelMeta(tc.meta); (err == nil) != tc.ok {
				t.Errorf("checkChannelMeta(%v) = %v, want ok %v", tc.meta, err, tc.ok)
			}
		})
	}
}

func TestWelcomeChannel(t *testing.T) {
	self := &mcpSelf{DisplayName: "alice", SessionPubkey: "a11ce00000000000", Role: "lead", Mesh: "team"}
	peers := []PeerRow{
		{Pubkey: "a11ce00000000000", DisplayName: "alice", PeerRole: "session"},  // this session
		{Pubkey: "a11cedaemon", DisplayName: "alice", PeerRole: "control-plane"}, // a daemon
		{Pubkey: "0lddaemon", DisplayName: "old", Channel: "claudemesh-daemon"},  // an older broker's daemon row
		{Pubkey: "b0b1", DisplayName: "bob", PeerRole: "session"},                // 1
		{Pubkey: "b0b2", DisplayName: "bob", PeerRole: "session"},                // 2, same name
		{Pubkey: "c", DisplayName: "carol"}, {Pubkey: "d", DisplayName: "dan"},   // 3, 4
		{Pubkey: "e", DisplayName: "erin"}, {Pubkey: "f", DisplayName: "fay"}, // 5, 6
		{Pubkey: "g", DisplayName: "gus"}, // 7
		{Pubkey: "a11ce-sibling", DisplayName: "alice", PeerRole: "session", SessionID: "sibling"}, // 8: a sibling session counts
	}
	unread := []inboxItem{
		{ID: "r5", BrokerMessageID: "b5", SenderName: "bob", SenderPubkey: "b0b1b0b1b0b1", Body: strPtr("newest   message\nwith lines"), ReceivedAt: "2026-05-04T10:42:01Z"},
		{ID: "r4", SenderName: "carol", SenderPubkey: "c", Body: nil, ReceivedAt: "2026-05-04T10:41:00Z"},
		{ID: "r3", BrokerMessageID: "b3", SenderName: "dan", Body: strPtr(strings.Repeat("x", 100)), ReceivedAt: "bad time"},
		{ID: "r2", BrokerMessageID: "b2", SenderName: "erin", Body: strPtr("old")},
		{ID: "r1", BrokerMessageID: "b1", SenderName: "fay", Body: strPtr("oldest")},
	}
	cases := []struct {
		name     string
		in       welcomeInput
		wantMeta map[string]string
		lines    []string // each must appear in the content
		absent   []string
	}{
		{"full", welcomeInput{Self: self, Peers: peers, Unread: unread, Location: time.UTC},
			map[string]string{"kind": "welcome", "self_display_name": "alice", "self_session_pubkey": "a11ce00000000000",
				"self_role": "lead", "mesh_slug": "team", "peer_count": "8",
				"peer_names": `["bob","carol","dan","erin","fay"]`, "unread_count": "5",
				"latest_message_ids": `["b5","r4","b3","b2","b1"]`},
			[]string{
				`[welcome] claudemesh is connected. You are alice (a11ce000, role lead) in mesh "team".`,
				"Peers online (8): bob, carol, dan, erin, fay and 2 more",
				"Unread messages (5):",
				"  bob (b0b1b0b1) at 10:42:01: newest message with lines",
				"  carol (c) at 10:41:00: (decrypt failed)",
				"  dan: " + strings.Repeat("x", welcomePreviewLen) + "…",
				"  and 2 more: run `claudemesh inbox` to read them",
				"claudemesh send", "claudemesh peer list", "SKILL.md", "needs no reply",
			}, []string{"erin: old"}},
		{"preview time in the given zone", welcomeInput{Self: self, Unread: unread[:1], Location: time.FixedZone("X", 2*3600)},
			nil, []string{"bob (b0b1b0b1) at 12:42:01: newest"}, nil},
		{"alone with an empty inbox", welcomeInput{Self: self, Peers: peers[:3]},
			map[string]string{"kind": "welcome", "self_display_name": "alice", "self_session_pubkey": "a11ce00000000000",
				"self_role": "lead", "mesh_slug": "team", "peer_count": "0", "peer_names": "[]", "unread_count": "0",
				"latest_message_ids": "[]"},
			[]string{"Peers online: none right now.", "Unread messages: none."}, nil},
		{"no session behind this server", welcomeInput{Peers: peers[:1]},
			map[string]string{"kind": "welcome", "self_display_name": "", "self_session_pubkey": "", "self_role": "",
				"mesh_slug": "", "peer_count": "1", "peer_names": `["alice"]`, "unread_count": "0", "latest_message_ids": "[]"},
			[]string{"not started by `claudemesh launch`", "Peers online (1): alice"}, nil},
		{"daemon queries failed", welcomeInput{Self: &mcpSelf{DisplayName: "alice"}, PeersFailed: true, UnreadFailed: true},
			map[string]string{"kind": "welcome", "self_display_name": "alice", "self_session_pubkey": "", "self_role": "",
				"mesh_slug": "", "peer_count": "", "peer_names": "[]", "unread_count": "", "latest_message_ids": "[]"},
			[]string{"You are alice.", "Peers: unknown", "Unread messages: unknown"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := welcomeChannel(tc.in)
			if tc.wantMeta != nil && !reflect.DeepEqual(got.Meta, tc.wantMeta) {
				t.Errorf("meta = %v\nwant %v", got.Meta, tc.wantMeta)
			}
			for _, l := range tc.lines {
				if !strings.Contains(got.Content, l) {
					t.Errorf("content lacks %q:\n%s", l, got.Content)
				}
			}
			for _, l := range tc.absent {
				if strings.Contains(got.Content, l) {
					t.Errorf("content has %q:\n%s", l, got.Content)
				}
			}
			assertWireMeta(t, got)
			var names, ids []string
			if err := json.Unmarshal([]byte(got.Meta["peer_names"]), &names); err != nil {
				t.Errorf("peer_names %q is not a JSON list: %v", got.Meta["peer_names"], err)
			}
			if err := json.Unmarshal([]byte(got.Meta["latest_message_ids"]), &ids); err != nil {
				t.Errorf("latest_message_ids %q is not a JSON list: %v", got.Meta["latest_message_ids"], err)
			}
		})
	}
}

func TestWelcomeLatestIDsAreBounded(t *testing.T) {
	var unread []inboxItem
	for i := 0; i < 50; i++ {
		unread = append(unread, inboxItem{ID: "r" + strings.Repeat("x", i)})
	}
	got := welcomeChannel(welcomeInput{Unread: unread})
	var ids []string
	if err := json.Unmarshal([]byte(got.Meta["latest_message_ids"]), &ids); err != nil {
		t.Fatal(err)
	}
	if len(ids) != welcomeLatestIDs || got.Meta["unread_count"] != "50" {
		t.Errorf("latest ids = %d, unread_count = %q; want %d and 50", len(ids), got.Meta["unread_count"], welcomeLatestIDs)
	}
}

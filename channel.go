// What a Claude Code session sees of the mesh: the params of
// notifications/claude/channel, built from the daemon's events. Claude Code
// renders each one as a <channel source="claudemesh" …> reminder whose
// attributes are the meta map.
//
// Policy: every meta value is a string and every meta key matches
// [A-Za-z0-9_]+. Claude Code validates meta as a string→string record and
// drops the whole notification — silently — when one value is a number or an
// array (claudemesh 1.34.6), and keys become attribute names. Counts are
// therefore digit strings and lists are JSON strings. The builders here are
// pure; checkChannelMeta guards the emit path.
package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// channelMethod is the notification Claude Code turns into a <channel>
// reminder (only for servers that declare experimental["claude/channel"]).
const channelMethod = "notifications/claude/channel"

// channelNotification is the params of one channel notification.
type channelNotification struct {
	Content string            `json:"content"`
	Meta    map[string]string `json:"meta"`
}

// isChannelMetaKey: ^[A-Za-z0-9_]+$.
func isChannelMetaKey(k string) bool {
	return matchesClass(k, 1, -1, orBytes(isAlnumByte, "_"), orBytes(isAlnumByte, "_"))
}

// checkChannelMeta reports a meta map Claude Code would reject.
func checkChannelMeta(meta map[string]string) error {
	for k, v := range meta {
		if !isChannelMetaKey(k) {
			return fmt.Errorf("channel meta key %q is not an identifier", k)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("channel meta %s is not valid UTF-8", k)
		}
	}
	return nil
}

// channelFromMessage renders a peer's message. The reply target is
// from_name; from_id and from_pubkey are the sender's member key when known
// (stable across its sessions), from_session_pubkey the key of the session
// that sent it.
func channelFromMessage(ev MessageEvent) channelNotification {
	name := cmp.Or(ev.SenderName, "unknown")
	priority := cmp.Or(ev.Priority, priorityNext)
	from := cmp.Or(string(ev.SenderMemberPubkey), ev.SenderPubkey)
	var b strings.Builder
	switch priority {
	case priorityNow:
		b.WriteString("[URGENT] ")
	case priorityLow:
		b.WriteString("[low] ")
	}
	b.WriteString(name)
	if ev.Topic != "" {
		b.WriteString(" (#" + strings.TrimPrefix(string(ev.Topic), "#") + ")")
	}
	b.WriteString(": ")
	if ev.Body == nil {
		b.WriteString("(decrypt failed)")
	} else {
		b.WriteString(*ev.Body)
	}
	meta := map[string]string{
		"from_id":             from,
		"from_pubkey":         from,
		"from_session_pubkey": ev.SenderPubkey,
		"from_name":           name,
		"mesh_slug":           ev.Mesh,
		"priority":            priority,
		"message_id":          messageRef(string(ev.BrokerMessageID), ev.ID),
		"client_message_id":   ev.ClientMessageID,
	}
	if ev.Topic != "" {
		meta["topic"] = string(ev.Topic)
	}
	if ev.ReplyToID != "" {
		meta["reply_to_id"] = string(ev.ReplyToID)
	}
	if ev.Subtype != "" {
		meta["subtype"] = ev.Subtype
	}
	return channelNotification{Content: b.String(), Meta: meta}
}

// mcpSystemEvent is the data of the daemon's peer_join, peer_leave and
// system events: {mesh, event, …eventData} where eventData is the broker's
// {name, pubkey, groups, lastSeenAt, summary}.
type mcpSystemEvent struct {
	Mesh       string            `json:"mesh"`
	Event      string            `json:"event"`
	Name       string            `json:"name"`
	Pubkey     string            `json:"pubkey"`
	Groups     []json.RawMessage `json:"groups"`
	LastSeenAt string            `json:"lastSeenAt"`
	Summary    string            `json:"summary"`
}

// channelSystemPreview bounds the JSON shown for a system event we have no
// wording for.
const channelSystemPreview = 240

// channelFromSystem renders a presence or other system event. kind is the
// SSE event type; data its JSON. Data that does not decode as a presence
// event is still shown, as raw JSON.
func channelFromSystem(kind string, data []byte) channelNotification {
	var ev mcpSystemEvent
	decoded := json.Unmarshal(data, &ev) == nil
	event := cmp.Or(ev.Event, kind)
	meta := map[string]string{"kind": "system", "event": event, "mesh_slug": ev.Mesh}
	groups := formatGroups(ev.Groups)
	if decoded {
		if ev.Name != "" {
			meta["peer_name"] = ev.Name
		}
		if ev.Pubkey != "" {
			meta["peer_pubkey"] = ev.Pubkey
		}
		if len(groups) > 0 {
			meta["peer_groups"] = jsonString(groups)
		}
		if ev.LastSeenAt != "" {
			meta["peer_last_seen_at"] = ev.LastSeenAt
		}
		if ev.Summary != "" {
			meta["peer_summary"] = ev.Summary
		}
	}
	var what string
	switch {
	case !decoded || ev.Name == "" && ev.Pubkey == "":
	case kind == "peer_join" || event == "peer_joined":
		what = "joined the mesh"
	case kind == "peer_leave" || event == "peer_left":
		what = "left the mesh"
	case event == "peer_returned":
		what = "is back in the mesh"
	case event == "peer_visible":
		what = "is visible again"
	case event == "peer_hidden":
		what = "is now hidden"
	}
	if what == "" {
		return channelNotification{Content: "[system] " + event + ": " + systemPreview(data), Meta: meta}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[system] Peer %q", ev.Name)
	if ev.Pubkey != "" {
		b.WriteString(" (" + shortID(ev.Pubkey) + ")")
	}
	if len(groups) > 0 {
		b.WriteString(" [" + strings.Join(groups, ", ") + "]")
	}
	b.WriteString(" " + what)
	if ev.LastSeenAt != "" {
		b.WriteString(" — last seen " + ev.LastSeenAt)
	}
	if ev.Summary != "" {
		b.WriteString(fmt.Sprintf(" · %q", truncateRunes(ev.Summary, 80)))
	}
	return channelNotification{Content: b.String(), Meta: meta}
}

// systemPreview is the event's JSON without the envelope fields, cut short.
func systemPreview(data []byte) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return truncateRunes(strings.TrimSpace(string(data)), channelSystemPreview)
	}
	delete(m, "ts")
	delete(m, "mesh")
	delete(m, "event")
	return truncateRunes(jsonString(m), channelSystemPreview)
}

// formatGroups renders groups as "@name" or "@name:role"; the broker sends
// {name, role} objects, older peers plain strings.
func formatGroups(raw []json.RawMessage) []string {
	var out []string
	for _, g := range raw {
		var s string
		if json.Unmarshal(g, &s) == nil {
			if s != "" {
				out = append(out, "@"+strings.TrimPrefix(s, "@"))
			}
			continue
		}
		var ref GroupRef
		if json.Unmarshal(g, &ref) == nil && ref.Name != "" {
			label := "@" + strings.TrimPrefix(ref.Name, "@")
			if ref.Role != "" {
				label += ":" + ref.Role
			}
			out = append(out, label)
		}
	}
	return out
}

// channelFromEvent turns one SSE event from /v1/events into the notification
// to emit. ok is false for events that produce none (broker_status, unknown
// kinds). rowID is the inbox row to mark seen once the emit succeeded; it is
// set only for messages.
func channelFromEvent(ev sseClientEvent) (n channelNotification, rowID string, ok bool, err error) {
	switch ev.Event {
	case "message":
		var m MessageEvent
		if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
			return channelNotification{}, "", false, fmt.Errorf("message event: %w", err)
		}
		if m.ID == "" {
			return channelNotification{}, "", false, errors.New("message event without an inbox row id")
		}
		return channelFromMessage(m), m.ID, true, nil
	case "peer_join", "peer_leave", "system":
		return channelFromSystem(ev.Event, []byte(ev.Data)), "", true, nil
	case eventUnsurfaced:
		var u UnsurfacedNotice
		if err := json.Unmarshal([]byte(ev.Data), &u); err != nil || u.Text == "" {
			return channelNotification{}, "", false, fmt.Errorf("unsurfaced event: %v", cmp.Or(err, errors.New("no text")))
		}
		return channelNotification{Content: "[system] " + u.Text, Meta: map[string]string{"kind": "system", "event": eventUnsurfaced,
			"mesh_slug": u.Mesh, "message_id": cmp.Or(u.MessageID, u.ID)}}, "", true, nil
	}
	return channelNotification{}, "", false, nil
}

// linkEndedChannel is the system notification for a broker_status event
// that ends this session's part in the mesh: its own session link kicked,
// or its member banned. Other status changes (reconnects, other sessions'
// links) say nothing to the session.
func linkEndedChannel(ev sseClientEvent, sessionID string) (channelNotification, bool) {
	var st BrokerStatusEvent
	if json.Unmarshal([]byte(ev.Data), &st) != nil {
		return channelNotification{}, false
	}
	var text, event string
	switch {
	case st.Link == linkSession && st.Status == string(LinkKicked) && sessionID != "" && st.SessionID == sessionID:
		text, event = "This session was kicked from mesh %q by an owner or admin: no messages reach it until it is launched again.", "session_kicked"
	case st.Link == linkMember && st.Status == string(LinkBanned):
		text, event = "This machine's member was banned from mesh %q: no messages reach this session until an owner or admin unbans it.", "member_banned"
	default:
		return channelNotification{}, false
	}
	return channelNotification{Content: "[system] " + fmt.Sprintf(text, st.Mesh),
		Meta: map[string]string{"kind": "system", "event": event, "mesh_slug": st.Mesh}}, true
}

// Welcome.

// mcpSelf is who this MCP server speaks for: the launched session registered
// with the daemon under the session token.
type mcpSelf struct {
	DisplayName   string
	SessionPubkey string
	Role          string
	Mesh          string
	HookWelcomed  bool // its session-start hook welcomed the model already
}

// messageEvent is the row as the message event that announced it.
func (m inboxItem) messageEvent() MessageEvent {
	return MessageEvent{
		ID: m.ID, Mesh: m.Mesh, ClientMessageID: m.ClientMessageID, BrokerMessageID: m.BrokerMessageID,
		SenderPubkey: m.SenderPubkey, SenderMemberPubkey: m.SenderMemberPubkey, SenderName: m.SenderName,
		Topic: m.Topic, ReplyToID: m.ReplyToID, Priority: m.Priority, Body: m.Body,
		RecipientPubkey: string(m.RecipientPubkey), RecipientKind: string(m.RecipientKind),
	}
}

// welcomeInput is what the welcome is composed from. Each daemon query may
// have failed on its own; the welcome still goes out, saying what it could
// not find out.
type welcomeInput struct {
	Self         *mcpSelf // nil: no launched session behind this server, or the lookup failed
	Peers        []PeerRow
	PeersFailed  bool
	Unread       []inboxItem // unread rows, newest first
	UnreadFailed bool
	Location     *time.Location // for preview times; nil means UTC
}

// Welcome limits.
const (
	welcomePeerNames  = 5
	welcomePreviews   = 3
	welcomeLatestIDs  = 10
	welcomePreviewLen = 60
)

// welcomePeers is the peer list as the welcome counts it: no control-plane
// rows (a member's daemon link is not someone to talk to; older brokers mark
// it only by channel), no session waiting out its reconnect grace, and not
// this session itself.
func welcomePeers(peers []PeerRow, self *mcpSelf) []PeerRow {
	var out []PeerRow
	for _, p := range peers {
		if p.PeerRole == "control-plane" || p.Channel == "claudemesh-daemon" || !rowLive(p) {
			continue
		}
		if self != nil && self.SessionPubkey != "" && p.Pubkey == self.SessionPubkey {
			continue
		}
		out = append(out, p)
	}
	return out
}

// welcomeChannel composes the one welcome a session gets after Claude Code
// has initialized the server: who it is, who is online, what is unread, and
// how to answer. It is informational: the reader must not reply to it.
func welcomeChannel(in welcomeInput) channelNotification {
	loc := in.Location
	if loc == nil {
		loc = time.UTC
	}
	self := mcpSelf{}
	if in.Self != nil {
		self = *in.Self
	}
	var b strings.Builder
	b.WriteString("[welcome] claudemesh is connected. ")
	if in.Self != nil {
		who := cmp.Or(self.DisplayName, "this session")
		var tags []string
		if self.SessionPubkey != "" {
			tags = append(tags, shortID(self.SessionPubkey))
		}
		if self.Role != "" {
			tags = append(tags, "role "+self.Role)
		}
		if len(tags) > 0 {
			who += " (" + strings.Join(tags, ", ") + ")"
		}
		fmt.Fprintf(&b, "You are %s", who)
		if self.Mesh != "" {
			fmt.Fprintf(&b, " in mesh %q", self.Mesh)
		}
		b.WriteString(".\n")
	} else {
		b.WriteString("This Claude Code was not started by `claudemesh launch`, so it has no session identity of its own.\n")
	}

	peers := welcomePeers(in.Peers, in.Self)
	names := []string{}
	seen := map[string]bool{}
	for _, p := range peers {
		if p.DisplayName == "" || seen[p.DisplayName] {
			continue
		}
		seen[p.DisplayName] = true
		names = append(names, p.DisplayName)
	}
	shown := names[:min(len(names), welcomePeerNames)]
	peerCount := strconv.Itoa(len(peers))
	switch {
	case in.PeersFailed:
		peerCount = ""
		b.WriteString("Peers: unknown (the daemon could not list them).\n")
	case len(peers) == 0:
		b.WriteString("Peers online: none right now.\n")
	default:
		fmt.Fprintf(&b, "Peers online (%d): %s", len(peers), strings.Join(shown, ", "))
		if more := len(names) - len(shown); more > 0 {
			fmt.Fprintf(&b, " and %d more", more)
		}
		b.WriteString("\n")
	}

	var latest []string
	for _, m := range in.Unread {
		if len(latest) == welcomeLatestIDs {
			break
		}
		latest = append(latest, messageRef(string(m.BrokerMessageID), m.ID))
	}
	switch {
	case in.UnreadFailed:
		b.WriteString("Unread messages: unknown (the daemon could not read the inbox).\n")
	case len(in.Unread) == 0:
		b.WriteString("Unread messages: none.\n")
	default:
		fmt.Fprintf(&b, "Unread messages (%d):\n", len(in.Unread))
		for _, m := range in.Unread[:min(len(in.Unread), welcomePreviews)] {
			b.WriteString("  " + welcomePreviewLine(m, loc) + "\n")
		}
		if more := len(in.Unread) - welcomePreviews; more > 0 {
			fmt.Fprintf(&b, "  and %d more: run `claudemesh inbox` to read them\n", more)
		}
	}
	b.WriteString("Answer a peer with `claudemesh send <name> \"<text>\"`; see who is online with `claudemesh peer list`; read what you missed with `claudemesh inbox`.\n")
	b.WriteString("The claudemesh skill (SKILL.md) explains channel messages and every verb; read it if it is not in your context yet. This welcome needs no reply.")

	latest = nonNil(latest)
	meta := map[string]string{
		"kind":                "welcome",
		"self_display_name":   self.DisplayName,
		"self_session_pubkey": self.SessionPubkey,
		"self_role":           self.Role,
		"mesh_slug":           self.Mesh,
		"peer_count":          peerCount,
		"peer_names":          jsonString(shown),
		"unread_count":        strconv.Itoa(len(in.Unread)),
		"latest_message_ids":  jsonString(latest),
	}
	if in.UnreadFailed {
		meta["unread_count"] = ""
	}
	return channelNotification{Content: b.String(), Meta: meta}
}

func welcomePreviewLine(m inboxItem, loc *time.Location) string {
	name := cmp.Or(m.SenderName, "unknown")
	line := name
	if m.SenderPubkey != "" {
		line += " (" + shortID(m.SenderPubkey) + ")"
	}
	if t, err := time.Parse(time.RFC3339Nano, m.ReceivedAt); err == nil {
		line += " at " + t.In(loc).Format("15:04:05")
	}
	body := "(decrypt failed)"
	if m.Body != nil {
		body = truncateRunes(strings.Join(strings.Fields(*m.Body), " "), welcomePreviewLen)
	}
	return line + ": " + body
}

// truncateRunes cuts s to n runes, marking the cut with an ellipsis.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

// jsonString is v as compact JSON, for meta values that carry lists and for
// previews; <, > and & stay as they are, since a reader sees the text.
func jsonString(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only lists of strings and maps of already-decoded JSON reach
		// here; neither fails to encode.
		return ""
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// `claudemesh send` (also `message send`): one message to a peer, a group,
// everyone, or a topic.
//
// Policy:
//   - Names and hex prefixes (4+ characters) are resolved here, against the
//     peer list, to the full key (claudemesh 1.31.6); no match and several matches are
//     errors that list the candidates. Without --mesh every mesh in scope is
//     searched, and a name found on two meshes asks for --mesh.
//   - Your own member key is refused unless --self, which sends one copy to
//     each of your other live sessions and reports each (claudemesh 1.32.0).
//   - The output says what happened: sent with the recipient online, sent
//     and held by the broker for an offline recipient, still queued in the
//     daemon's outbox, or failed (exit 1).
//   - The CLI chooses the message's client_message_id before it sends, so
//     a send whose answer was lost (the daemon died mid-request) names it
//     in its error, and a retry with --client-id <id> is deduplicated
//     (by the daemon's outbox, or by the broker on the one-shot path).
//   - Without a usable daemon (per --strict / --no-daemon) the message goes
//     over a one-shot broker connection, sealed with that connection's key,
//     and the verb waits for the broker's ack.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// minCLIPrefix is the shortest key prefix `send` resolves (claudemesh 1.31.6).
const minCLIPrefix = 4

// sendWait is how long a warm send waits by default: for the broker's
// answer (else the message is reported queued), then for its receipts.
const sendWait = 2 * time.Second

type sendFlags struct {
	mesh, priority, replyTo, clientID, file string
	self                                    bool
	wait                                    time.Duration
}

// maxSendInput bounds what `send` reads from stdin or --file: far above
// any broker's message limit, so that the limit, not the read, is what a
// long text meets.
const maxSendInput = 1 << 20

// hintLongMessage is what to do with a text over the broker's limit.
const hintLongMessage = "make it smaller: split a long text into several messages, or share it as a skill (claudemesh skill share <name> --file <path>) and send its name"

// sendBody is the message text: the words after the target, stdin for a
// lone "-", or the file --file names.
func sendBody(c *cli, f sendFlags, words []string) (string, error) {
	var data []byte
	var err error
	var from string
	switch {
	case f.file != "" && len(words) > 0:
		return "", usageError("give the message as words or as --file, not both")
	case f.file != "":
		from = f.file
		data, err = readCapped(func() (io.ReadCloser, error) { return os.Open(f.file) })
	case len(words) == 1 && words[0] == "-":
		from = "stdin"
		if c.env.StdinTTY {
			c.infof("type the message, then Ctrl-D on a line of its own")
		}
		data, err = readCapped(func() (io.ReadCloser, error) { return io.NopCloser(c.env.Stdin), nil })
	default:
		return strings.Join(words, " "), nil
	}
	if err != nil {
		return "", exitError(exitIO, fmt.Errorf("reading the message from %s: %w", from, err))
	}
	if len(data) > maxSendInput {
		return "", exitError(exitUsage, fmt.Errorf("the message from %s is over %d bytes; a message holds about %d bytes of text",
			from, maxSendInput, maxPlaintextFor(defaultMaxMessageBytes, "")), hintLongMessage)
	}
	if !utf8.Valid(data) {
		return "", withHint(usageError("the message from %s is not valid UTF-8 text", from), "convert it first, for example with iconv -t UTF-8")
	}
	return string(data), nil
}

// readCapped reads at most maxSendInput+1 bytes, so that a caller can tell
// an input over the cap without reading all of it.
func readCapped(open func() (io.ReadCloser, error)) ([]byte, error) {
	r, err := open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, maxSendInput+1))
}

func setupSend(fs *flagSet) runFunc {
	var f sendFlags
	fs.StringVar(&f.mesh, "mesh", "", "mesh slug")
	fs.StringVar(&f.priority, "priority", priorityNext, "now, next or low (busy peers get only now)")
	fs.StringVar(&f.replyTo, "reply-to", "", "the message id this answers")
	fs.BoolVar(&f.self, "self", false, "to your own member key: one copy to each of your other live sessions")
	fs.StringVar(&f.clientID, "client-id", "", "the message's client_message_id: retry a failed send with the id it printed and it is delivered once")
	fs.StringVar(&f.file, "file", "", "send this file's text as the message")
	fs.DurationVar(&f.wait, "wait", sendWait, "wait up to this long for the broker and the recipient's receipts (0: return once queued, without asking who is online)")
	return func(ctx context.Context, c *cli, args []string) error {
		const usage = "usage: claudemesh send <to> <message…> (or - to read it from stdin, or --file <path>)"
		if len(args) < 1 {
			return usageError(usage)
		}
		if !validPriority(f.priority) {
			return usageError("--priority must be now, next or low, not %q", f.priority)
		}
		if f.clientID != "" && f.self {
			return usageError("--client-id names one message; --self sends one per session")
		}
		if len(f.clientID) > maxIDLen {
			return usageError("--client-id is longer than %d bytes", maxIDLen)
		}
		if f.wait < 0 || f.wait > maxSendWaitMs*time.Millisecond {
			return usageError("--wait must be between 0 and %s", maxSendWaitMs*time.Millisecond)
		}
		to := strings.TrimSpace(args[0])
		if targetForm(to) == "" {
			return usageError("%q is not a target: give a name, a key (or prefix), @group, * or #topic", to)
		}
		text, err := sendBody(c, f, args[1:])
		if err != nil {
			return err
		}
		if strings.TrimSpace(text) == "" {
			return usageError(usage)
		}
		return c.warmOrCold(ctx, f.mesh,
			func(cl *DaemonClient) error { return runSend(ctx, c, daemonMessenger{cl}, f, to, text) },
			func(m Mesh, cl *ColdLink) error { return runSend(ctx, c, coldMessenger{cl}, f, to, text) })
	}
}

// meshPeerRow is a peer row with the mesh it was listed on.
type meshPeerRow struct {
	PeerRow
	Mesh string `json:"mesh"`
}

// meshMemberRow is a member row with the mesh it was listed on.
type meshMemberRow struct {
	MemberRow
	Mesh string `json:"mesh"`
}

// sendMessage is one message to one resolved target. presence asks the
// messenger to say whether a DM's recipient is online, if it can.
type sendMessage struct {
	mesh, to, text, priority, replyTo string
	clientID                          string // "" for a fresh one
	presence                          bool
	// wait bounds the wait for the broker's answer and then, with
	// receipts, for the recipients' receipts.
	wait     time.Duration
	receipts bool
	// knownSurfacing and knownOffline are what the peer list said of a
	// recipient resolved by name before the send (the send itself says
	// them only for a key).
	knownSurfacing string
	knownOffline   bool
}

// sendOutcome is what became of one message.
type sendOutcome struct {
	Status          string // "sent" (the broker has it), "queued" (still in the daemon's outbox) or "failed"
	MessageID       string
	ClientMessageID string
	Mesh            string
	Target          string
	Error           string
	Duplicate       bool
	// Online and Name: the recipient's presence when the messenger could
	// tell it with the send (nil: it could not, ask the peer list).
	Online *bool
	Name   string
	// Surfacing is how messages reach the recipient's model, when known.
	Surfacing string
	// Ladder is how far the message got within the wait (the daemon only).
	Ladder *messageLadder
}

// messenger is where `send` does its work: the daemon or a one-shot broker
// connection.
type messenger interface {
	peers(ctx context.Context, mesh string) ([]meshPeerRow, error)
	// members lists the mesh's members (every mesh when mesh is ""),
	// online or not.
	members(ctx context.Context, mesh string) ([]meshMemberRow, error)
	send(ctx context.Context, m sendMessage) (sendOutcome, error)
	// selfSession is the calling session's key ("" outside a session or
	// when it cannot be known).
	selfSession(ctx context.Context) string
	via() string
	// presenceWithSend reports whether send can answer sendMessage.presence
	// itself, so the peer list is not needed for the online check.
	presenceWithSend() bool
}

type daemonMessenger struct{ cl *DaemonClient }

func (m daemonMessenger) via() string            { return "daemon" }
func (m daemonMessenger) presenceWithSend() bool { return true }

func (m daemonMessenger) peers(ctx context.Context, mesh string) ([]meshPeerRow, error) {
	resp, err := callIPC(ctx, m.cl, apiPeers, MeshQuery{Mesh: mesh})
	if err != nil {
		return nil, ipcFailure(err)
	}
	out := make([]meshPeerRow, 0, len(resp.Peers))
	for _, p := range resp.Peers {
		out = append(out, meshPeerRow{PeerRow: p.Row, Mesh: p.Mesh})
	}
	return out, nil
}

func (m daemonMessenger) members(ctx context.Context, mesh string) ([]meshMemberRow, error) {
	resp, err := callIPC(ctx, m.cl, apiMembers, MeshQuery{Mesh: mesh})
	if err != nil {
		return nil, ipcFailure(err)
	}
	out := make([]meshMemberRow, 0, len(resp.Members))
	for _, r := range resp.Members {
		out = append(out, meshMemberRow{MemberRow: r.Row, Mesh: r.Mesh})
	}
	return out, nil
}

func (m daemonMessenger) selfSession(ctx context.Context) string {
	me, err := m.cl.SessionMe(ctx)
	if err != nil || me == nil || me.Presence == nil {
		return ""
	}
	return me.Presence.SessionPubkey
}

func (m daemonMessenger) send(ctx context.Context, msg sendMessage) (sendOutcome, error) {
	start := time.Now()
	a, err := callIPCWithin(ctx, m.cl, msg.wait+ipcTimeout, apiSend, SendRequest{To: msg.to, Message: msg.text, Priority: msg.priority,
		WaitMs: int(msg.wait.Milliseconds()), Mesh: msg.mesh, ReplyToID: msg.replyTo, Presence: msg.presence && msg.wait > 0,
		ClientMessageID: msg.clientID})
	if err != nil {
		return sendOutcome{}, ipcFailure(err)
	}
	var ladder *messageLadder
	if msg.receipts && msg.wait > 0 {
		// The rest of the wait goes to the receipts: no further than
		// delivered for a recipient shown messages only when it asks, and
		// none for one that is offline.
		left := max(msg.wait-time.Since(start), 0)
		q := MessageQuery{ID: a.ID, WaitMs: int(left.Milliseconds())}
		offline, surfacing := msg.knownOffline, msg.knownSurfacing
		if r := a.Recipient; r != nil {
			offline, surfacing = !r.Online, r.Surfacing
		}
		if offline {
			q.WaitMs = 0
		} else if surfacing == surfacedViaPull {
			q.Until = rungDelivered
		}
		if rep, err := callIPCWithin(ctx, m.cl, left+ipcTimeout, apiMessage, q); err == nil {
			ladder = rep.Message.Ladder
			if s := rep.Message.Status; s != a.Status && (s == outboxDone || s == outboxDead) {
				a.Status, a.BrokerMessageID, a.LastError = s, rep.Message.BrokerMessageID, rep.Message.LastError
			}
		}
	}
	out := sendOutcome{ClientMessageID: a.ClientMessageID, MessageID: deref(a.BrokerMessageID), Mesh: a.Mesh, Target: a.Target,
		Error: deref(a.LastError), Duplicate: deref(a.Duplicate), Ladder: ladder}
	if r := a.Recipient; r != nil {
		out.Online, out.Name, out.Surfacing = &r.Online, r.DisplayName, r.Surfacing
	}
	switch a.Status {
	case outboxDone:
		out.Status = "sent"
	case outboxDead:
		out.Status = "failed"
	default:
		out.Status = "queued"
	}
	return out, nil
}

type coldMessenger struct{ link *ColdLink }

func (m coldMessenger) via() string                            { return "broker" }
func (m coldMessenger) presenceWithSend() bool                 { return false }
func (m coldMessenger) selfSession(ctx context.Context) string { return "" }

func (m coldMessenger) peers(ctx context.Context, mesh string) ([]meshPeerRow, error) {
	raw, err := coldRequest(ctx, m.link, ListPeersFrame{Type: frameListPeers}, framePeersList)
	if err != nil {
		return nil, err
	}
	var f PeersListFrame
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("bad peers_list: %w", err)
	}
	out := make([]meshPeerRow, 0, len(f.Peers))
	for _, p := range f.Peers {
		out = append(out, meshPeerRow{PeerRow: p, Mesh: m.link.Mesh.Slug})
	}
	return out, nil
}

func (m coldMessenger) members(ctx context.Context, mesh string) ([]meshMemberRow, error) {
	list, _, err := coldMembers(ctx, m.link)
	if err != nil {
		return nil, err
	}
	out := make([]meshMemberRow, 0, len(list))
	for _, r := range list {
		out = append(out, meshMemberRow{MemberRow: r, Mesh: m.link.Mesh.Slug})
	}
	return out, nil
}

// send seals a DM with the connection's own key (the broker names that key
// as the sender) and waits for the broker's ack.
func (m coldMessenger) send(ctx context.Context, msg sendMessage) (sendOutcome, error) {
	out := sendOutcome{ClientMessageID: cmp.Or(msg.clientID, newUUID()), Mesh: m.link.Mesh.Slug, Target: msg.to}
	var nonce, ct string
	if isHexKey(msg.to) {
		var err error
		if nonce, ct, err = sealDM([]byte(msg.text), msg.to, m.link.Key); err != nil {
			return out, err
		}
	} else {
		nonce, ct = plainBody([]byte(msg.text))
	}
	if size := len(ct) + len(nonce) + len(msg.to); size > defaultMaxMessageBytes {
		return out, exitError(exitFailure, fmt.Errorf("the message is %d bytes once encrypted; brokers accept at most %d (about %d bytes of text)",
			size, defaultMaxMessageBytes, maxPlaintextFor(defaultMaxMessageBytes, msg.to)), hintLongMessage)
	}
	fp, err := requestFingerprint(msg.to, msg.replyTo, msg.priority, nil, []byte(msg.text))
	if err != nil {
		return out, err
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ack, err := m.link.Send(sctx, SendFrame{Type: frameSend, ID: out.ClientMessageID, ClientMessageID: out.ClientMessageID,
		RequestFingerprint: fmt.Sprintf("%x", fp), TargetSpec: msg.to, Priority: msg.priority, Nonce: nonce, Ciphertext: ct,
		ReplyToID: msg.replyTo})
	if verdict, reason := judgeSend(ack, err); verdict != verdictDone {
		out.Status, out.Error = "failed", reason
		return out, nil
	}
	out.Status, out.MessageID = "sent", ack.MessageID
	return out, nil
}

// runSend resolves the target and sends, on whichever messenger.
func runSend(ctx context.Context, c *cli, m messenger, f sendFlags, to, text string) error {
	cfg, err := c.loadUserConfig()
	if err != nil {
		return err
	}
	ownMembers := map[string]string{} // member key → mesh
	for _, mesh := range cfg.Meshes {
		ownMembers[mesh.Pubkey] = mesh.Slug
	}
	var peers []meshPeerRow
	var peersErr error
	loaded := false
	loadPeers := func(mesh string) {
		if !loaded {
			peers, peersErr = m.peers(ctx, mesh)
			loaded = true
		}
	}
	target, mesh, label := to, f.mesh, to
	var known *meshPeerRow
	knownOffline := false
	switch targetForm(to) {
	case targetFormDirect:
		target, label = strings.ToLower(to), shortKey(strings.ToLower(to))
	case targetFormPeer:
		loadPeers(f.mesh)
		if peersErr != nil {
			return peersErr
		}
		var members []meshMemberRow
		target, mesh, err = resolveAcrossMeshes(to, peers, nil, f.mesh)
		var te *TargetError
		if errors.As(err, &te) && te.Code == "no_peer_matches" {
			// Nobody online by that name or prefix: perhaps someone offline.
			if members, _ = m.members(ctx, f.mesh); members != nil {
				target, mesh, err = resolveAcrossMeshes(to, peers, members, f.mesh)
			}
		}
		if err != nil {
			return targetFailure(err)
		}
		label = peerLabel(cmp.Or(nameOf(peers, target), nameOfMember(memberRows(members), target)), target)
		known = peerOf(peers, target, mesh)
		if known == nil {
			knownOffline = true // resolved among the members: nobody online by that name
		}
	}
	if ownMesh, ok := ownMembers[target]; ok && (mesh == "" || mesh == ownMesh) {
		if !f.self {
			return withHint(exitError(exitUsage, fmt.Errorf("%s is your own member key", shortKey(target))),
				"to reach your other sessions, add --self")
		}
		return runSelfFanOut(ctx, c, m, f, ownMesh, target, text)
	}
	if f.self {
		c.warnf("--self had no effect: %s is not your own member key", label)
	}

	// For a direct key, whether the recipient is online: the daemon says
	// with the send; else read the peer list while the message goes out.
	direct := targetForm(target) == targetFormDirect && !loaded
	var wg sync.WaitGroup
	if direct && !m.presenceWithSend() {
		wg.Add(1)
		go func() { defer wg.Done(); loadPeers(mesh) }()
	}
	clientID := cmp.Or(f.clientID, newUUID())
	msg := sendMessage{mesh: mesh, to: target, text: text, priority: f.priority, replyTo: f.replyTo,
		clientID: clientID, presence: direct && m.presenceWithSend(), wait: f.wait, receipts: true, knownOffline: knownOffline}
	if known != nil && known.Profile != nil {
		msg.knownSurfacing = known.Profile.Surfacing
	}
	if (to == "*" || strings.HasPrefix(to, "@")) && msg.wait > 0 && m.via() == "daemon" {
		loadPeers(mesh)
		if peersErr == nil && !anyRecipientShownUnasked(peers, to, mesh, m.selfSession(ctx)) {
			// Nobody it reaches is shown messages without asking: a
			// surfaced receipt cannot come, so waiting for one only
			// holds the prompt for the whole --wait.
			msg.knownSurfacing = surfacedViaPull
		}
	}
	out, err := m.send(ctx, msg)
	wg.Wait()
	var answered *IPCError
	if err != nil && errors.As(err, &answered) {
		return err // the daemon refused it: nothing was accepted
	}
	if err != nil {
		// The message may have been accepted before the answer was lost.
		return withHint(err, fmt.Sprintf("its client_message_id is %s: if it may have gone out, retry with --client-id %s and it is delivered once", clientID, clientID))
	}
	if out.Online != nil {
		if out.Name != "" && label == shortKey(target) {
			label = peerLabel(out.Name, target)
		}
		return c.reportSend(out, label, out.Online, m.via())
	}
	// The daemon was asked (only when the send waits) and did not say: an
	// older one, or its broker link is down. With --wait 0 it was not
	// asked, and the send waits on the broker for nothing, a peer list
	// included: who the key is and whether it is online stay unsaid. (The
	// cold path read the list beside the send.)
	if direct && msg.wait > 0 {
		loadPeers(mesh)
	}
	var online *bool
	if isHexKey(target) && loaded && peersErr == nil {
		on := false
		for _, p := range peers {
			if p.Pubkey == target && (out.Mesh == "" || p.Mesh == out.Mesh) {
				on = true
				if label == shortKey(target) {
					label = peerLabel(p.DisplayName, target)
				}
				if p.Profile != nil && out.Surfacing == "" {
					out.Surfacing = p.Profile.Surfacing
				}
			}
		}
		online = &on
	}
	return c.reportSend(out, label, online, m.via())
}

// peerOf is the peer list's row of key on mesh (any mesh when mesh is
// ""), or nil.
// anyRecipientShownUnasked reports whether a broadcast or group message
// reaches a live session other than the sender's own whose model is shown
// messages by a channel or hooks (and so may send a surfaced receipt).
func anyRecipientShownUnasked(peers []meshPeerRow, to, mesh, self string) bool {
	group := strings.TrimPrefix(to, "@")
	for _, p := range peers {
		if (mesh != "" && p.Mesh != mesh) || p.Pubkey == self || p.PeerRole == peerRoleControlPlane || p.Profile == nil {
			continue
		}
		if to != "*" && !slices.ContainsFunc(p.Groups, func(g GroupRef) bool { return g.Name == group }) {
			continue
		}
		if p.Profile.Surfacing == surfacedViaChannel || p.Profile.Surfacing == surfacedViaHooks {
			return true
		}
	}
	return false
}

func peerOf(peers []meshPeerRow, key, mesh string) *meshPeerRow {
	for i, p := range peers {
		if peerTargetKey(p.PeerRow) == key && (mesh == "" || p.Mesh == mesh) {
			return &peers[i]
		}
	}
	return nil
}

// nameOf is the display name a key goes by in the peer list.
func nameOf(peers []meshPeerRow, key string) string {
	for _, p := range peers {
		if peerTargetKey(p.PeerRow) == key {
			return p.DisplayName
		}
	}
	return ""
}

// resolveAcrossMeshes resolves a name or prefix on each mesh in peers and
// members (or only on mesh): it must name one key on one mesh.
func resolveAcrossMeshes(to string, peers []meshPeerRow, members []meshMemberRow, mesh string) (key, onMesh string, err error) {
	byMesh := map[string][]PeerRow{}
	for _, p := range peers {
		if mesh == "" || p.Mesh == mesh {
			byMesh[p.Mesh] = append(byMesh[p.Mesh], p.PeerRow)
		}
	}
	membersOf := map[string][]MemberRow{}
	for _, m := range members {
		if mesh == "" || m.Mesh == mesh {
			membersOf[m.Mesh] = append(membersOf[m.Mesh], m.MemberRow)
			byMesh[m.Mesh] = append(byMesh[m.Mesh], []PeerRow{}...)
		}
	}
	if mesh != "" {
		byMesh[mesh] = append(byMesh[mesh], []PeerRow{}...)
	}
	slugs := make([]string, 0, len(byMesh))
	for s := range byMesh {
		slugs = append(slugs, s)
	}
	sort.Strings(slugs)
	type hit struct{ key, mesh, name string }
	var hits []hit
	var online []string
	for _, s := range slugs {
		k, err := resolvePeerTarget(to, byMesh[s], membersOf[s], minCLIPrefix, s)
		var te *TargetError
		switch {
		case err == nil:
			hits = append(hits, hit{k, s, cmp.Or(nameOfRows(byMesh[s], k), nameOfMember(membersOf[s], k))})
		case errors.As(err, &te) && te.Code == "ambiguous_target":
			return "", "", err
		case errors.As(err, &te):
			for _, cand := range te.Candidates {
				if len(slugs) > 1 {
					cand += " on " + s
				}
				online = append(online, cand)
			}
		default:
			return "", "", err
		}
	}
	switch len(hits) {
	case 1:
		return hits[0].key, hits[0].mesh, nil
	case 0:
		where := mesh
		if where == "" && len(slugs) == 1 {
			where = slugs[0]
		}
		return "", "", &TargetError{Code: "no_peer_matches", To: to, Mesh: where, Candidates: online}
	}
	var cands []string
	for _, h := range hits {
		cands = append(cands, peerLabel(h.name, h.key)+" on "+h.mesh)
	}
	return "", "", &TargetError{Code: "ambiguous_target", To: to, Candidates: cands}
}

// memberRows drops the mesh from member rows.
func memberRows(rows []meshMemberRow) []MemberRow {
	out := make([]MemberRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.MemberRow)
	}
	return out
}

func nameOfMember(members []MemberRow, key string) string {
	for _, m := range members {
		if m.Pubkey == key {
			return m.DisplayName
		}
	}
	return ""
}

func nameOfRows(rows []PeerRow, key string) string {
	for _, r := range rows {
		if peerTargetKey(r) == key {
			return r.DisplayName
		}
	}
	return ""
}

// targetFailure turns a resolution error into the CLI's error with a hint.
func targetFailure(err error) error {
	var te *TargetError
	if !errors.As(err, &te) {
		return err
	}
	if te.Code == "ambiguous_target" {
		return exitError(exitFailure, te, "use the full key, a longer prefix, or --mesh")
	}
	return exitError(exitNotFound, te, "see who is online with 'claudemesh peer list'",
		"names and prefixes match peers online; someone offline is reached by their full 64-hex key, and the broker keeps the message for them")
}

// runSelfFanOut sends one copy to each live sibling session of our member
// on mesh (claudemesh 1.32.0).
func runSelfFanOut(ctx context.Context, c *cli, m messenger, f sendFlags, mesh, member, text string) error {
	peers, err := m.peers(ctx, mesh)
	if err != nil {
		return err
	}
	me := m.selfSession(ctx)
	var siblings []meshPeerRow
	for _, p := range peers {
		if p.Mesh == mesh && p.MemberPubkey == member && p.PeerRole != peerRoleControlPlane && p.Pubkey != me && p.Pubkey != member {
			siblings = append(siblings, p)
		}
	}
	if len(siblings) == 0 {
		return exitError(exitNotFound, fmt.Errorf("no other live session of yours on %s", mesh),
			"start one with 'claudemesh launch', or see 'claudemesh peer list'")
	}
	type result struct {
		Pubkey    string `json:"pubkey"`
		Name      string `json:"name"`
		OK        bool   `json:"ok"`
		Status    string `json:"status"`
		MessageID string `json:"messageId,omitempty"`
		Error     string `json:"error,omitempty"`
	}
	var results []result
	sent := 0
	for _, s := range siblings {
		r := result{Pubkey: s.Pubkey, Name: s.DisplayName}
		out, err := m.send(ctx, sendMessage{mesh: mesh, to: s.Pubkey, text: text, priority: f.priority, replyTo: f.replyTo, wait: f.wait})
		switch {
		case err != nil:
			r.Status, r.Error = "failed", err.Error()
		default:
			r.Status, r.MessageID, r.Error = out.Status, out.MessageID, out.Error
			r.OK = out.Status != "failed"
		}
		if r.OK {
			sent++
		}
		results = append(results, r)
	}
	if c.jsonMode() {
		if err := c.printJSON(map[string]any{"ok": sent == len(results), "mesh": mesh, "fanout": results, "via": m.via()}); err != nil {
			return err
		}
	} else {
		c.printf("fanned out to %d sibling session(s) on %s (%s): %d sent\n", len(results), mesh, m.via(), sent)
		for _, r := range results {
			mark, what := c.paint(colorGreen, "✔"), r.Status
			if !r.OK {
				mark, what = c.paint(colorRed, "✘"), "failed: "+r.Error
			} else if r.Status == "queued" {
				mark = c.paint(colorYellow, "⚠")
				what = "queued in the daemon outbox"
			}
			c.printf("  %s %s %s\n", mark, terminalLine(peerLabel(r.Name, r.Pubkey)), terminalLine(what))
		}
	}
	if sent < len(results) {
		return silentExit(exitFailure)
	}
	return nil
}

// reportSend prints one send's outcome; a failure is an error (exit 1).
// sendDoc is `send --json`: camelCase, as claudemesh scripts read it.
type sendDoc struct {
	OK              bool   `json:"ok"`
	Status          string `json:"status"` // sent | queued | failed
	MessageID       string `json:"messageId"`
	ClientMessageID string `json:"clientMessageId"`
	Target          string `json:"target"`
	Mesh            string `json:"mesh"`
	Via             string `json:"via"` // daemon | broker
	Duplicate       bool   `json:"duplicate"`
	RecipientOnline *bool  `json:"recipientOnline"` // null when it cannot be told
	// RecipientSurfacing is how messages reach the recipient's model
	// (channel, hooks, pull), when it says.
	RecipientSurfacing string `json:"recipientSurfacing,omitempty"`
	Error              string `json:"error,omitempty"`
	// Ladder is how far the message got within --wait: through the
	// daemon only.
	Ladder *ladderDoc `json:"ladder,omitempty"`
}

func (c *cli) reportSend(out sendOutcome, label string, online *bool, via string) error {
	if !c.jsonMode() {
		label = terminalLine(label) // a peer's name
	}
	if c.jsonMode() {
		doc := sendDoc{OK: out.Status != "failed", Status: out.Status, MessageID: out.MessageID, ClientMessageID: out.ClientMessageID,
			Target: out.Target, Mesh: out.Mesh, Via: via, Duplicate: out.Duplicate, RecipientOnline: online,
			RecipientSurfacing: out.Surfacing, Error: out.Error, Ladder: ladderDocOf(out.Ladder)}
		if err := c.printJSON(doc); err != nil {
			return err
		}
		if out.Status == "failed" {
			return silentExit(exitFailure)
		}
		return nil
	}
	id := shortID(out.MessageID)
	switch {
	case out.Status == "failed":
		hint := "see 'claudemesh peer list' for who is on the mesh"
		switch ackErrorCode(out.Error) {
		case codeRateLimit:
			hint = "the broker limits how fast one member sends; try again in a moment"
		case codePayloadTooLarge:
			hint = hintLongMessage
		}
		return exitError(exitFailure, fmt.Errorf("send to %s failed: %s", label, out.Error), hint)
	case out.Status == "queued":
		why := "waiting for the broker"
		if out.Error != "" {
			why = strings.TrimPrefix(out.Error, "waiting: ")
		}
		c.printf("%s queued for %s in the daemon's outbox (%s); it goes out on its own\n", c.paint(colorYellow, "⚠"), label, why)
		c.printf("  see 'claudemesh daemon outbox list'\n")
	case online != nil && !*online:
		c.printf("%s sent to %s — not connected now; the broker delivers it when they reconnect (msg %s)\n",
			c.paint(colorYellow, "⚠"), label, id)
	case online != nil:
		c.printf("%s sent to %s — online (msg %s)\n", c.paint(colorGreen, "✔"), label, id)
	default:
		c.printf("%s sent to %s on %s (msg %s)\n", c.paint(colorGreen, "✔"), label, out.Mesh, id)
	}
	if out.Ladder != nil && out.Status == "sent" {
		for _, line := range ladderWords(*out.Ladder, label, out.Surfacing) {
			c.printf("  %s\n", c.paintRung(line))
		}
		if out.Surfacing == surfacedViaPull {
			return nil // the ladder said it
		}
	}
	if out.Surfacing == surfacedViaPull {
		c.printf("  note: %s has no live channel and no hooks: it sees the message only when it runs 'claudemesh inbox'\n", label)
	}
	return nil
}

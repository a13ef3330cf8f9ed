// What the daemon does with a frame a broker sends unasked: system pushes
// become events on the bus; message pushes go to the MessageSink (the inbox,
// which owns storage and the client_ack).
//
// Policy (the echo guards of claudemesh 1.34.8–1.34.9):
//   - a session link drops every system push (the member link covers them)
//     and every push whose sender is its own session key;
//   - the member link drops pushes from its own member key, but keeps those
//     a sibling session sent (sender is a session key of the same member);
//   - system events about our own member or any of our session keys are
//     dropped (self-join filter).
//
// The MessageSink is the inbox (inbox.go) unless a test supplies its own;
// without one the daemon would neither store nor ack message pushes, so the
// broker would keep them queued for a daemon that can.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"time"
)

// pushAction is what to do with one push.
type pushAction int

const (
	pushDeliver       pushAction = iota // a message for the inbox
	pushDropEcho                        // our own message coming back
	pushDropSystem                      // a system push on a session link
	pushDropSelfEvent                   // a system event about ourselves
	pushPublishSystem                   // a system event for the bus
)

func (a pushAction) String() string {
	return [...]string{"deliver", "drop_echo", "drop_system", "drop_self_event", "publish_system"}[a]
}

// pushContext is what classification needs to know about the receiving link.
type pushContext struct {
	Kind          string          // linkMember or linkSession
	MemberPubkey  string          // this mesh's member key
	SessionPubkey string          // the session link's own key
	OwnSessions   map[string]bool // every live session key of this daemon
}

// classifyPush applies the echo guards and the self-join filter.
func classifyPush(pc pushContext, p PushFrame, ev SystemEventData) pushAction {
	system := p.Subtype == subtypeSystem && p.Event != ""
	if pc.Kind == linkSession {
		if system {
			return pushDropSystem
		}
		if p.SenderPubkey != "" && p.SenderPubkey == pc.SessionPubkey {
			return pushDropEcho
		}
		return pushDeliver
	}
	if system {
		if ev.Pubkey != "" && (ev.Pubkey == pc.MemberPubkey || pc.OwnSessions[ev.Pubkey]) {
			return pushDropSelfEvent
		}
		return pushPublishSystem
	}
	if pc.MemberPubkey != "" && p.SenderMemberPubkey == pc.MemberPubkey &&
		(p.SenderPubkey == "" || p.SenderPubkey == pc.MemberPubkey) {
		return pushDropEcho
	}
	return pushDeliver
}

// systemEventKind maps a broker event name to the bus's kind.
func systemEventKind(event string) string {
	switch event {
	case eventPeerJoined:
		return eventPeerJoin
	case eventPeerLeft:
		return eventPeerLeave
	}
	return eventSystem
}

// InboundMessage is a message push with where it arrived.
type InboundMessage struct {
	Mesh            string
	Push            PushFrame
	RecipientKind   string    // recipientSession or recipientMember
	RecipientPubkey string    // the key the push was addressed to on this link
	MemberPubkey    string    // this mesh's member key
	MemberSessions  []string  // on the member link: this daemon's session keys of that member
	Keys            []Keypair // decryption keys to try, in order (session, then member)
	Frame           Inbound   // Reply(ctx, ClientAckFrame) acks on the link it came from
}

// MessageSink stores message pushes (the inbox). It must ack
// (client_ack through msg.Frame.Reply) only what it has stored or
// deliberately dropped, and publish a `message` event for new rows.
type MessageSink interface {
	HandleMessage(ctx context.Context, msg InboundMessage)
}

// onLinkFrame is the inbound hook of every link of this daemon.
func (d *Daemon) onLinkFrame(l *Link, pc func() pushContext, keys func() []Keypair, f Inbound) {
	switch f.Head.Type {
	case framePush:
	case frameReceipt:
		if l.Kind() == linkMember {
			d.onReceipt(l, f)
		}
		return
	case frameStateChange:
		// Every connection hears of a change; the member link tells the
		// stream once for the machine.
		var sc StateChangeFrame
		if l.Kind() == linkMember && json.Unmarshal(f.Data, &sc) == nil && sc.Key != "" {
			d.bus.Publish(Event{Kind: eventState, Mesh: l.Mesh(), Data: &StateEvent{Mesh: l.Mesh(), Key: sc.Key, Value: sc.Value, UpdatedBy: sc.UpdatedBy}})
		}
		return
	case frameSystemBatch:
		var b SystemBatchFrame
		if err := json.Unmarshal(f.Data, &b); err != nil {
			d.log.Warn("bad_system_batch", "mesh", l.Mesh(), "err", err.Error())
			return
		}
		ctx := pc()
		for _, ev := range b.Events {
			d.onPush(l, ctx, keys, f, ev.push(b.MeshID))
		}
		return
	case frameError:
		var ef ErrorFrame
		_ = json.Unmarshal(f.Data, &ef)
		d.log.Warn("broker_error_frame", "mesh", l.Mesh(), "link", l.Kind(), "code", ef.Code, "message", ef.Message)
		return
	default:
		// state_change and frames newer than us: nothing consumes them yet.
		return
	}
	var p PushFrame
	if err := json.Unmarshal(f.Data, &p); err != nil {
		d.log.Warn("bad_push", "mesh", l.Mesh(), "err", err.Error())
		return
	}
	d.onPush(l, pc(), keys, f, p)
}

// onPush classifies one push (or one event of a system batch) and hands it
// on: to the bus, the inbox, or nowhere.
func (d *Daemon) onPush(l *Link, ctx pushContext, keys func() []Keypair, f Inbound, p PushFrame) {
	var ev SystemEventData
	if len(p.EventData) > 0 {
		_ = json.Unmarshal(p.EventData, &ev)
	}
	action := classifyPush(ctx, p, ev)
	switch action {
	case pushPublishSystem:
		data := map[string]any{}
		if len(p.EventData) > 0 {
			_ = json.Unmarshal(p.EventData, &data)
		}
		data["mesh"] = l.Mesh()
		data["event"] = p.Event
		d.bus.Publish(Event{Kind: systemEventKind(p.Event), Mesh: l.Mesh(), Data: data})
	case pushDeliver:
		recipient := ctx.MemberPubkey
		kind := recipientMember
		if l.Kind() == linkSession {
			recipient, kind = ctx.SessionPubkey, recipientSession
		}
		msg := InboundMessage{Mesh: l.Mesh(), Push: p, RecipientKind: kind, RecipientPubkey: recipient,
			MemberPubkey: ctx.MemberPubkey, Keys: keys(), Frame: f}
		if kind == recipientMember {
			msg.MemberSessions = d.sessionKeysOf(l.Mesh())
		}
		if !d.nameSender(l.Mesh(), &msg.Push) {
			// Asking the broker for names needs this link's read loop,
			// which is running this: the message waits off the loop.
			d.lookups.Add(1)
			go func() {
				defer d.lookups.Done()
				d.lookUpSender(l.Mesh(), &msg.Push)
				d.deliverMessage(msg)
			}()
			return
		}
		d.deliverMessage(msg)
	case pushDropEcho:
		// An echo is done with: ack it so the broker stops redelivering.
		d.log.Debug("self_echo_dropped", "mesh", l.Mesh(), "link", l.Kind(), "message_id", p.MessageID)
		if d.opts.Messages != nil {
			d.ackPush(f, p)
		}
	default:
		d.log.Debug("push_dropped", "mesh", l.Mesh(), "link", l.Kind(), "why", action.String(), "event", p.Event)
	}
}

// nameSender fills a push's missing sender name (and member key) from what
// the daemon knows: its own sessions, then names learnt from peer lists
// and earlier pushes. It reports false when the name is still unknown. A
// push that carries a name teaches it.
func (d *Daemon) nameSender(mesh string, p *PushFrame) bool {
	if p.SenderName != "" || !isHexKey(p.SenderPubkey) {
		d.senders.learn(mesh, p.SenderPubkey, knownSender{Name: p.SenderName, MemberPubkey: p.SenderMemberPubkey})
		return true
	}
	s, ok := d.ownSessionSender(mesh, p.SenderPubkey)
	if !ok {
		s, ok = d.senders.lookup(mesh, p.SenderPubkey)
	}
	if ok {
		p.SenderName, p.SenderMemberPubkey = s.Name, cmp.Or(p.SenderMemberPubkey, s.MemberPubkey)
	}
	return ok
}

// lookUpSender asks mesh's broker for its peers (at most once per interval)
// and names the push's sender from them; a sender nobody can name keeps
// the inbox's short-key fallback.
func (d *Daemon) lookUpSender(mesh string, p *PushFrame) {
	e, ok := d.joinedMesh(mesh)
	if !ok {
		return
	}
	d.senders.refresh(mesh, time.Now(), func() ([]PeerRow, error) { return d.listPeers(d.ctx, e) })
	d.nameSender(mesh, p)
}

// deliverMessage hands a message push to the sink. Without one it is left
// un-acked on purpose: the broker keeps it until something stores it.
func (d *Daemon) deliverMessage(msg InboundMessage) {
	if d.opts.Messages == nil {
		d.log.Info("message_push_unhandled", "mesh", msg.Mesh, "message_id", msg.Push.MessageID,
			"recipient_kind", msg.RecipientKind)
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	d.opts.Messages.HandleMessage(ctx, msg)
}

// ackPush sends client_ack for p on the connection it came from.
func (d *Daemon) ackPush(f Inbound, p PushFrame) {
	cmid := cmp.Or(p.ClientMessageID, p.MessageID)
	ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
	defer cancel()
	_ = f.Reply(ctx, ClientAckFrame{Type: frameClientAck, ClientMessageID: cmid, BrokerMessageID: p.MessageID})
}

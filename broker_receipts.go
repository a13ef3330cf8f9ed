// Receipts: how far a message got at its recipient, routed back to the
// message's sender (featureReceipts).
//
// Policy:
//   - A receipt speaks for the key the message was delivered to, which must
//     be the connection's own key or a session key of the connection's
//     member: a member cannot make receipts up for another member's keys.
//     The broker names that key as the receipt's recipient, so the sender
//     learns who reached which rung from the broker, not from the claim.
//   - It is stored and routed like a small DM to the sender's member key:
//     queued while that key is offline (for as long as a message waits),
//     deduplicated by (message, recipient key, rung, path, confirmation),
//     pushed once its store write has committed, leased and acked like a
//     push. It is never a message: it goes out as a receipt frame, and only
//     to connections whose handshake said they take receipts; the rest of
//     its key's connections never see it.
//   - Grants do not apply: a receipt is about a message the sender chose to
//     send. Receipts have their own rate bucket, larger than sends', since a
//     member that receives much also sends many receipts.
package main

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// receiptRateFactor is how many receipts a member may send per send its
// bucket allows: up to three per message it receives (delivered, surfaced,
// surfaced confirmed), from many senders.
const receiptRateFactor = 20

// receiptClientID is the dedupe id of a receipt: the same rung at the same
// key for the same message is stored once, however often it is sent.
func receiptClientID(f *ReceiptFrame) string {
	h := sha256.Sum256([]byte(f.MessageID + "|" + f.RecipientPubkey + "|" + f.State + "|" + f.Via + "|" + strconv.FormatBool(f.Confirmed)))
	return "receipt-" + hex.EncodeToString(h[:16])
}

// handleReceipt answers a receipt through the connection's ordered
// replies, as handleSend answers a send: a refusal at once, a stored
// receipt once its batch has committed, when it is also pushed.
func (b *Broker) handleReceipt(c *brokerConn, f *ReceiptFrame, reqID string) {
	place := c.replies.reserve(c.ctx.Done())
	if place == nil {
		return
	}
	ack := AckFrame{Type: frameAck, ID: f.ID, ReqID: reqID}
	refuse := func(code, format string, a ...any) {
		ack.Error = code + ": " + fmt.Sprintf(format, a...)
		c.answerSend(place, ack)
		b.metrics.receiptsRefused.Add(1)
	}
	me := b.self(c)
	if me == nil {
		c.replies.fill(place, nil) // the socket is going: nothing to answer
		return
	}
	name, err := b.receiptSpeaker(me, f.RecipientPubkey)
	switch {
	case errors.Is(err, errNotFound):
		refuse(codeForbidden, "%s is not a key of this connection's member", shortKey(f.RecipientPubkey))
		return
	case err != nil:
		refuse(codeInternal, "store unavailable")
		return
	}
	now := time.Now()
	b.mu.Lock()
	allowed := takeToken(b.sendBuckets, "receipt:"+me.memberID, b.opts.SendBurst*receiptRateFactor,
		b.opts.SendPerMinute*receiptRateFactor, now)
	b.mu.Unlock()
	if !allowed {
		refuse(codeRateLimit, "max %d receipts/min", b.opts.SendPerMinute*receiptRateFactor)
		return
	}
	to, err := b.directRecipient(me.meshID, f.To)
	switch {
	case errors.Is(err, errNotFound):
		refuse(codeUnknownTarget, "no member or session key %s in this mesh", f.To)
		return
	case err != nil:
		refuse(codeInternal, "store unavailable")
		return
	case to.revoked:
		refuse(codeUnknownTarget, "%s belongs to a banned member", f.To)
		return
	}
	body, _ := json.Marshal(f.ReceiptBody)
	op := appendOp{Recipients: []string{f.To}, Msg: storedMessage{ID: newMessageID(now), MeshID: me.meshID, SenderMemberID: me.memberID,
		SenderPubkey: f.RecipientPubkey, SenderMemberPubkey: me.memberPubkey, SenderName: name, TargetSpec: f.To,
		Priority: priorityNow, Nonce: "", Ciphertext: base64.StdEncoding.EncodeToString(body), CreatedAt: now,
		ExpiresAt: now.Add(b.opts.MessageTTL), ClientMessageID: receiptClientID(f), ReplyToID: f.MessageID, Subtype: subtypeReceipt}}
	b.writes.appendAsync(op, func(r appendResult) {
		if r.Err != nil {
			b.log.Error("append receipt", "err", r.Err)
			refuse(codeInternal, "store unavailable")
			return
		}
		// Counted before the ack goes out, so whoever reads the ack reads
		// counters that include this receipt.
		switch {
		case r.Dup:
			b.metrics.receiptsDuplicate.Add(1)
		case b.receiptReachable(me.meshID, f.To):
			b.metrics.receipts.Add(1)
		default:
			b.metrics.receipts.Add(1)
			b.metrics.receiptsQueued.Add(1)
		}
		ack.MessageID, ack.Queued = r.ID, true
		c.answerSend(place, ack)
		if !r.Dup {
			m := op.Msg
			m.Seq = r.Seq
			b.fanOut(m, r.Recipients)
		}
	})
}

// receiptSpeaker checks that key is the connection's own key or a session
// key of its member, and returns the name the key goes by: its presence's
// when it is online, else the member's. errNotFound: neither.
func (b *Broker) receiptSpeaker(me *peer, key string) (string, error) {
	if key == me.key || key == me.memberPubkey {
		return me.displayName, nil
	}
	b.mu.Lock()
	if r := b.rooms[me.meshID]; r != nil {
		for _, p := range r.byKey[key] {
			if p.memberID == me.memberID {
				name := p.displayName
				b.mu.Unlock()
				return name, nil
			}
		}
	}
	b.mu.Unlock()
	ctx, cancel := b.storeCtx()
	defer cancel()
	m, err := b.store.KeyOwner(ctx, me.meshID, key)
	if err != nil {
		return "", err
	}
	if m.ID != me.memberID {
		return "", errNotFound
	}
	return cmp.Or(m.DisplayName, me.displayName), nil
}

// receiptReachable reports whether a connection of key takes receipts now.
func (b *Broker) receiptReachable(meshID, key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r := b.rooms[meshID]; r != nil {
		for _, p := range r.byKey[key] {
			if p.conn != nil && p.receipts {
				return true
			}
		}
	}
	return false
}

// receiptNotice is the frame a stored receipt goes out as.
func receiptNotice(m storedMessage) []byte {
	n := ReceiptNoticeFrame{Type: frameReceipt, ReceiptID: m.ID, MeshID: m.MeshID, RecipientPubkey: m.SenderPubkey,
		RecipientMemberPubkey: m.SenderMemberPubkey, RecipientName: m.SenderName, CreatedAt: isoTime(m.CreatedAt)}
	if raw, err := base64.StdEncoding.DecodeString(m.Ciphertext); err == nil {
		_ = json.Unmarshal(raw, &n.ReceiptBody)
	}
	n.MessageID = cmp.Or(n.MessageID, m.ReplyToID)
	data, _ := json.Marshal(n)
	return data
}

// Member-signed requests to a broker's HTTP API (grants, the audit log,
// invite lists and revocations): a JSON body carrying the member's key, a
// timestamp in ms and an ed25519 signature over the route's path and the
// canonical JSON of every other field. Shared by the CLI, which signs, and
// the broker, which checks.
package main

import (
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// MemberRequest is the envelope every member-signed request body embeds.
type MemberRequest struct {
	Pubkey    string `json:"pubkey"`
	Timestamp int64  `json:"timestamp"`
	Signature string `json:"signature"`
}

func (r *MemberRequest) envelope() *MemberRequest { return r }

// signedRequest is a request body that embeds MemberRequest.
type signedRequest interface{ envelope() *MemberRequest }

// signMemberRequest fills req's envelope with kp's key, now, and the
// signature over path and req's other fields.
func signMemberRequest(kp Keypair, path string, req signedRequest, now time.Time) error {
	e := req.envelope()
	e.Pubkey, e.Timestamp, e.Signature = kp.PublicHex(), now.UnixMilli(), ""
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	msg, err := memberRequestMessage(path, body)
	if err != nil {
		return err
	}
	e.Signature = kp.sign(msg)
	return nil
}

// errMemberRequestSignature is a signed request whose signature does not
// verify against its own key.
var errMemberRequestSignature = errors.New("signature does not verify")

// openMemberRequest checks the signature of a raw request body for path
// and returns its envelope; the caller still checks the timestamp, replays
// and who the key is.
func openMemberRequest(path string, body []byte) (MemberRequest, error) {
	var e MemberRequest
	if err := json.Unmarshal(body, &e); err != nil {
		return e, errors.New("body is not a JSON object with pubkey, timestamp and signature")
	}
	if !isHexKey(e.Pubkey) {
		return e, errors.New("pubkey must be 64 lowercase hex")
	}
	if e.Timestamp <= 0 {
		return e, errors.New("timestamp (ms) is required")
	}
	msg, err := memberRequestMessage(path, body)
	if err != nil {
		return e, err
	}
	if !isHexOfLen(e.Signature, 128) || !verifySignature(e.Pubkey, msg, e.Signature) {
		return e, errMemberRequestSignature
	}
	return e, nil
}

// memberRequestMessage is the signed string for a body: its fields but
// the signature, in canonical JSON.
func memberRequestMessage(path string, body []byte) (string, error) {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	var fields map[string]any
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return "", errors.New("body is not a JSON object")
	}
	delete(fields, "signature")
	canon, err := canonicalJSON(fields)
	if err != nil {
		return "", err
	}
	return memberRequestSignedString(path, canon), nil
}

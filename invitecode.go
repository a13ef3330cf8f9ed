// v2 invite codes: short, opaque and easy to read aloud. A code is ten
// symbols of Crockford's base32 (digits and capitals without I, L, O and
// U), shown as two groups of five (K7M2X-Q9PRT); reading one back forgives
// case, dashes, spaces and the letters people mistake for digits (I and L
// for 1, O for 0). It only names an invite on its broker: the invite itself
// is the mesh owner's signed capability over
// v=2|<mesh_id>|<invite_id>|<expires_at>|<role>|<owner_pubkey>.
package main

import (
	"crypto/rand"
	"errors"
	"strings"
)

// inviteCodeAlphabet is Crockford's base32.
const inviteCodeAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// inviteCodeLen is a code's symbols: 50 bits, behind the broker's rate
// limit on claims and the invite's own expiry and use limit.
const inviteCodeLen = 10

// newInviteCode makes a random code in its normal form (no dash).
func newInviteCode() string {
	b := make([]byte, inviteCodeLen)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = inviteCodeAlphabet[int(b[i])%len(inviteCodeAlphabet)]
	}
	return string(b)
}

// errNotInviteCode is a string that cannot be an invite code.
var errNotInviteCode = errors.New("not an invite code")

// normalizeInviteCode reads a code as a person may have typed it and
// returns its normal form.
func normalizeInviteCode(s string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToUpper(strings.TrimSpace(s)) {
		switch {
		case r == '-' || r == ' ':
			continue
		case r == 'I' || r == 'L':
			r = '1'
		case r == 'O':
			r = '0'
		case !strings.ContainsRune(inviteCodeAlphabet, r):
			return "", errNotInviteCode
		}
		b.WriteRune(r)
	}
	if b.Len() != inviteCodeLen {
		return "", errNotInviteCode
	}
	return b.String(), nil
}

// displayInviteCode shows a normal-form code in two groups of five.
func displayInviteCode(code string) string {
	if len(code) != inviteCodeLen {
		return code
	}
	return code[:5] + "-" + code[5:]
}

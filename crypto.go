// Identity keys, signed strings and message bodies, byte-compatible with
// libsodium so that claudemesh peers written against it can talk to ours:
// ed25519 keys in libsodium's hex layout (secret = seed ‖ public), detached
// signatures over UTF-8 strings, and crypto_box with libsodium's
// ed25519→X25519 conversion.
package main

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/nacl/box"
)

// Keypair is an ed25519 identity: a member key, a session key or a mesh owner key.
type Keypair struct {
	Public ed25519.PublicKey
	Secret ed25519.PrivateKey // seed ‖ public, as libsodium stores it
}

// isHexKey reports whether s is a lowercase 64-hex public key: the form a
// "direct" target has on the wire (^[0-9a-f]{64}$).
func isHexKey(s string) bool { return len(s) == 64 && isLowerHex(s) }

// isHexSecret reports whether s is a lowercase 128-hex secret key.
func isHexSecret(s string) bool { return len(s) == 128 && isLowerHex(s) }

// newKeypair makes a fresh random ed25519 identity.
func newKeypair() (Keypair, error) {
	pub, sec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Keypair{}, fmt.Errorf("generate key: %w", err)
	}
	return Keypair{Public: pub, Secret: sec}, nil
}

// mustNewKeypair is newKeypair for places where the system RNG failing is
// not a recoverable condition (tests, demo fixtures).
func mustNewKeypair() Keypair {
	kp, err := newKeypair()
	if err != nil {
		panic(err)
	}
	return kp
}

// PublicHex is the 64-char lowercase public key.
func (k Keypair) PublicHex() string { return hex.EncodeToString(k.Public) }

// SecretHex is the 128-char lowercase secret key (seed ‖ public).
func (k Keypair) SecretHex() string { return hex.EncodeToString(k.Secret) }

// keypairFromHex parses a libsodium-layout hex keypair and checks that the
// public half embedded in the secret matches the stated public key.
func keypairFromHex(pubHex, secHex string) (Keypair, error) {
	pub, err := decodeHexKey(pubHex, ed25519.PublicKeySize, "public key")
	if err != nil {
		return Keypair{}, err
	}
	sec, err := decodeHexKey(secHex, ed25519.PrivateKeySize, "secret key")
	if err != nil {
		return Keypair{}, err
	}
	derived := ed25519.NewKeyFromSeed(sec[:ed25519.SeedSize])
	if !bytes.Equal(derived[ed25519.SeedSize:], sec[ed25519.SeedSize:]) || !bytes.Equal(pub, sec[ed25519.SeedSize:]) {
		return Keypair{}, errors.New("secret key does not match public key")
	}
	return Keypair{Public: ed25519.PublicKey(pub), Secret: ed25519.PrivateKey(sec)}, nil
}

func decodeHexKey(s string, size int, what string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("%s must be %d hex characters", what, size*2)
	}
	return b, nil
}

// sign returns the detached ed25519 signature of msg as 128 lowercase hex.
func (k Keypair) sign(msg string) string {
	return hex.EncodeToString(ed25519.Sign(k.Secret, []byte(msg)))
}

// verifySignature checks a hex signature by a hex public key over msg. Hex is
// accepted in either case, as libsodium-based peers may send either.
func verifySignature(pubHex, msg, sigHex string) bool {
	pub, err := hex.DecodeString(pubHex)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return false
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, []byte(msg), sig)
}

// The signed strings of the protocol. Integers are base 10; times are
// milliseconds since the epoch unless the name says otherwise.

// helloSignedString is what a member signs in its `hello` frame.
func helloSignedString(meshID, memberID, pubkey string, timestampMs int64) string {
	return strings.Join([]string{meshID, memberID, pubkey, strconv.FormatInt(timestampMs, 10)}, "|")
}

// attestationSignedString is what a member signs to vouch for a session key.
func attestationSignedString(parentMemberPubkey, sessionPubkey string, expiresAtMs int64) string {
	return "claudemesh-session-attest|" + parentMemberPubkey + "|" + sessionPubkey + "|" + strconv.FormatInt(expiresAtMs, 10)
}

// sessionHelloSignedString is what a session key signs in `session_hello`.
func sessionHelloSignedString(meshID, parentMemberPubkey, sessionPubkey string, timestampMs int64) string {
	return "claudemesh-session-hello|" + meshID + "|" + parentMemberPubkey + "|" + sessionPubkey + "|" + strconv.FormatInt(timestampMs, 10)
}

// inviteSignedString is what the mesh owner signs in a v1 invite: every
// field's value, the version first (so a v1 invite's string starts "1|");
// expiresAtSec is in unix seconds.
func inviteSignedString(version int, meshID, meshSlug, brokerURL string, expiresAtSec int64, rootKey, role, ownerPubkey string) string {
	return strings.Join([]string{strconv.Itoa(version), meshID, meshSlug, brokerURL, strconv.FormatInt(expiresAtSec, 10), rootKey, role, ownerPubkey}, "|")
}

// meshCreateSignedString is what the creator key signs to create a mesh on a
// broker without a web account.
func meshCreateSignedString(slug, pubkey string, timestampMs int64) string {
	return "claudemesh-mesh-create|" + slug + "|" + pubkey + "|" + strconv.FormatInt(timestampMs, 10)
}

// inviteCreateSignedString is what the mesh owner key signs to register a v1
// invite with its broker (POST /cli/mesh/<slug>/invite). The token is the
// whole base64url invite, so the request binds exactly the invite the owner
// signed, and the use limit the broker will enforce for it.
func inviteCreateSignedString(slug, token string, maxUses int, timestampMs int64) string {
	return "claudemesh-invite-create|" + slug + "|" + token + "|" + strconv.Itoa(maxUses) + "|" + strconv.FormatInt(timestampMs, 10)
}

// inviteV2SignedString is the capability the mesh owner signs for a v2
// invite (its canonical_v2); expiresAtSec is in unix seconds.
func inviteV2SignedString(meshID, inviteID string, expiresAtSec int64, role, ownerPubkey string) string {
	return "v=2|" + meshID + "|" + inviteID + "|" + strconv.FormatInt(expiresAtSec, 10) + "|" + role + "|" + ownerPubkey
}

// memberRequestSignedString is what a member key signs for a request to a
// broker's HTTP API: the route's path, then the canonical JSON of the whole
// body but its signature (pubkey and timestamp included), so that every
// field the broker acts on is bound to the key and the moment.
func memberRequestSignedString(path, canonicalBody string) string {
	return "claudemesh-member-request|" + path + "|" + canonicalBody
}

// Session attestations: a member key vouching for a session key.

// Attestation is the parent member's signed statement that a session key
// speaks for it until ExpiresAt (ms).
type Attestation struct {
	SessionPubkey      string `json:"sessionPubkey"`
	ParentMemberPubkey string `json:"parentMemberPubkey"`
	ExpiresAt          int64  `json:"expiresAt"`
	Signature          string `json:"signature"`
}

// attestationTTLMs is how long launch and the daemon make attestations last;
// brokers refuse anything over 24 h.
const attestationTTLMs = 12 * 60 * 60 * 1000

// signAttestation makes an attestation by member for sessionPubkey.
func signAttestation(member Keypair, sessionPubkey string, expiresAtMs int64) Attestation {
	return Attestation{
		SessionPubkey:      sessionPubkey,
		ParentMemberPubkey: member.PublicHex(),
		ExpiresAt:          expiresAtMs,
		Signature:          member.sign(attestationSignedString(member.PublicHex(), sessionPubkey, expiresAtMs)),
	}
}

// DM bodies: crypto_box (X25519-XSalsa20-Poly1305) between ed25519 identities.

// edPublicToX25519 converts an ed25519 public key to X25519 as libsodium's
// crypto_sign_ed25519_pk_to_curve25519 does, refusing the same bad points.
func edPublicToX25519(pub []byte) (*[32]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("ed25519 public key must be 32 bytes")
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, errors.New("invalid ed25519 public key")
	}
	// libsodium rejects small-order points and points outside the main subgroup.
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return nil, errors.New("ed25519 public key has small order")
	}
	var out [32]byte
	copy(out[:], p.BytesMontgomery())
	return &out, nil
}

// edSecretToX25519 converts an ed25519 secret key to X25519 as libsodium's
// crypto_sign_ed25519_sk_to_curve25519 does: sha512 of the seed, clamped.
func edSecretToX25519(sec ed25519.PrivateKey) *[32]byte {
	h := sha512.Sum512(sec[:ed25519.SeedSize])
	var out [32]byte
	copy(out[:], h[:32])
	out[0] &= 248
	out[31] &= 127
	out[31] |= 64
	return &out
}

var errDecrypt = errors.New("message could not be decrypted")

// Sealed boxes (libsodium's crypto_box_seal): a message for one X25519
// key from nobody in particular, as a v2 invite hands over the mesh root
// key. Keys and boxes travel as base64url without padding.

// sealAnonymous seals msg to the X25519 public key recipientB64.
func sealAnonymous(msg []byte, recipientB64 string) (string, error) {
	pub, err := x25519Key(recipientB64)
	if err != nil {
		return "", err
	}
	sealed, err := box.SealAnonymous(nil, msg, pub, rand.Reader)
	if err != nil {
		return "", err
	}
	return b64url(sealed), nil
}

// openAnonymous opens a sealed box with the recipient's X25519 keypair.
func openAnonymous(sealedB64 string, pub, sec *[32]byte) ([]byte, error) {
	sealed, err := unb64url(sealedB64)
	if err != nil {
		return nil, errDecrypt
	}
	msg, ok := box.OpenAnonymous(nil, sealed, pub, sec)
	if !ok {
		return nil, errDecrypt
	}
	return msg, nil
}

// x25519Key decodes a base64url X25519 public key.
func x25519Key(s string) (*[32]byte, error) {
	raw, err := unb64url(s)
	if err != nil || len(raw) != 32 {
		return nil, errors.New("an X25519 public key is 32 bytes in base64url")
	}
	var k [32]byte
	copy(k[:], raw)
	return &k, nil
}

// sealDM encrypts plaintext from sender to the recipient's ed25519 public
// key. It returns the random nonce and MAC ‖ box, both standard base64.
func sealDM(plaintext []byte, recipientPubHex string, sender Keypair) (nonceB64, ciphertextB64 string, err error) {
	return dmKeys.seal(plaintext, recipientPubHex, sender)
}

// openDM decrypts a DM sealed by senderPubHex for recipient.
func openDM(nonceB64, ciphertextB64, senderPubHex string, recipient Keypair) ([]byte, error) {
	return dmKeys.open(nonceB64, ciphertextB64, senderPubHex, recipient)
}

// seal is sealDM with this cache's shared keys.
func (c *sharedKeyCache) seal(plaintext []byte, recipientPubHex string, sender Keypair) (nonceB64, ciphertextB64 string, err error) {
	shared, err := c.shared(sender, recipientPubHex)
	if err != nil {
		return "", "", fmt.Errorf("recipient key: %w", err)
	}
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", "", err
	}
	sealed := box.SealAfterPrecomputation(nil, plaintext, &nonce, shared)
	return b64(nonce[:]), b64(sealed), nil
}

// open is openDM with this cache's shared keys.
func (c *sharedKeyCache) open(nonceB64, ciphertextB64, senderPubHex string, recipient Keypair) ([]byte, error) {
	nonceBytes, err := unb64(nonceB64)
	if err != nil || len(nonceBytes) != 24 {
		return nil, errDecrypt
	}
	sealed, err := unb64(ciphertextB64)
	if err != nil {
		return nil, errDecrypt
	}
	shared, err := c.shared(recipient, senderPubHex)
	if err != nil {
		return nil, errDecrypt
	}
	var nonce [24]byte
	copy(nonce[:], nonceBytes)
	out, ok := box.OpenAfterPrecomputation(nil, sealed, &nonce, shared)
	if !ok {
		return nil, errDecrypt
	}
	return out, nil
}

// dmKeys is the process's cache of crypto_box shared keys (the X25519 of
// one of our secrets with a peer's key, as box.Precompute makes it):
// deriving one costs about a hundred times what sealing a chat line does,
// and a daemon talks to the same few peers over and over. It holds nothing
// the process does not already hold (the secrets it derives from), never
// leaves memory, and is dropped whole when it fills.
var dmKeys = &sharedKeyCache{max: 4096}

// sharedKeyCache maps (our public key, peer public key) to the precomputed
// crypto_box key. Safe for concurrent use.
type sharedKeyCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*[32]byte
}

// shared returns the crypto_box key between our keypair and the peer's
// ed25519 public key (hex), deriving and caching it on first use. A key
// libsodium would refuse is refused, and not cached.
func (c *sharedKeyCache) shared(our Keypair, peerPubHex string) (*[32]byte, error) {
	if len(our.Secret) != ed25519.PrivateKeySize {
		return nil, errors.New("secret key must be 64 bytes")
	}
	// The secret's second half is its public key, so this names the pair
	// without holding secret bytes in the key.
	id := string(our.Secret[ed25519.SeedSize:]) + peerPubHex
	c.mu.Lock()
	k, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return k, nil
	}
	ppub, err := hex.DecodeString(peerPubHex)
	if err != nil {
		return nil, errors.New("key is not hex")
	}
	px, err := edPublicToX25519(ppub)
	if err != nil {
		return nil, err
	}
	k = new([32]byte)
	box.Precompute(k, px, edSecretToX25519(our.Secret))
	c.mu.Lock()
	if c.m == nil || len(c.m) >= c.max {
		c.m = make(map[string]*[32]byte)
	}
	c.m[id] = k
	c.mu.Unlock()
	return k, nil
}

// plainBody encodes a broadcast, group or topic body: the text in base64 and
// a random nonce that nobody reads, as claudemesh peers expect.
func plainBody(text []byte) (nonceB64, ciphertextB64 string) {
	var nonce [24]byte
	_, _ = rand.Read(nonce[:])
	return b64(nonce[:]), b64(text)
}

// Base64: standard with padding on the wire (libsodium ORIGINAL); URL-safe
// without padding for invite tokens and root keys.

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func unb64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// unb64url accepts URL-safe base64 with or without padding.
func unb64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// randomHex returns n random bytes as lowercase hex (session tokens, ids).
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the system RNG does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}

// newUUID returns a random RFC 4122 version 4 UUID.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// base62Alphabet spells broker-made ids, as claudemesh's generateId does.
const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID returns a random 32-character base62 id: the form of the ids a
// broker makes (mesh, member, presence, message).
func newID() string {
	const n = 32
	out := make([]byte, 0, n)
	buf := make([]byte, 48)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			panic(err)
		}
		for _, c := range buf {
			// 248 = 4·62: rejecting the top values keeps every letter equally likely.
			if c < 248 && len(out) < n {
				out = append(out, base62Alphabet[c%62])
			}
		}
	}
	return string(out)
}

// newMessageID is a broker message id of the same form as newID whose
// first 8 letters spell the time in milliseconds (base62, most significant
// first, so ids sort by time) and the other 24 are random: stores that
// index message ids then add each new one at the index's end instead of at
// a random page.
func newMessageID(now time.Time) string {
	id := []byte(newID())
	t := uint64(max(now.UnixMilli(), 0))
	for i := 7; i >= 0; i-- {
		id[i] = base62Alphabet[t%62]
		t /= 62
	}
	return string(id)
}

// Request fingerprints: the sender daemon's idempotency check, echoed by
// brokers. Mesh and resolved target are deliberately not part of it.

// destinationOf classifies a raw `to` for the fingerprint: `@x` → (topic, x),
// `*` → (topic, *), anything else → (dm, to).
func destinationOf(to string) (kind, ref string) {
	switch {
	case to == "*":
		return "topic", "*"
	case strings.HasPrefix(to, "@"):
		return "topic", to[1:]
	default:
		return "dm", to
	}
}

// requestFingerprint computes sha256 over the version, destination kind and
// ref, reply-to id, priority and canonical meta — each followed by a 0x00
// byte — then the raw sha256 of the body. meta may be nil.
func requestFingerprint(to, replyToID, priority string, meta any, body []byte) ([32]byte, error) {
	priority = cmp.Or(priority, priorityNext)
	metaJSON := ""
	if meta != nil {
		s, err := canonicalJSON(meta)
		if err != nil {
			return [32]byte{}, err
		}
		metaJSON = s
	}
	kind, ref := destinationOf(to)
	h := sha256.New()
	for _, part := range []string{"1", kind, ref, replyToID, priority, metaJSON} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	bodySum := sha256.Sum256(body)
	h.Write(bodySum[:])
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// Tests of keys, signatures and crypto_box against fixed libsodium vectors,
// the signed strings and request fingerprints.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"
)

// RFC 8032 §7.1 test 1.
const (
	rfcSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	rfcPub  = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	rfcSig  = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

func rfcKeypair(t *testing.T) Keypair {
	t.Helper()
	kp, err := keypairFromHex(rfcPub, rfcSeed+rfcPub)
	if err != nil {
		t.Fatalf("keypairFromHex(rfc) = %v", err)
	}
	return kp
}

func TestSignFixedVector(t *testing.T) {
	kp := rfcKeypair(t)
	if got := kp.sign(""); got != rfcSig {
		t.Fatalf("sign(\"\") = %s, want %s", got, rfcSig)
	}
	if !verifySignature(rfcPub, "", rfcSig) {
		t.Fatal("verify(rfc vector) = false")
	}
	if !verifySignature(strings.ToUpper(rfcPub), "", strings.ToUpper(rfcSig)) {
		t.Fatal("verify must accept upper-case hex")
	}
}

func TestVerifyRejectsTampering(t *testing.T) {
	kp := mustNewKeypair()
	msg := helloSignedString("mesh1", "member1", kp.PublicHex(), 1760000000000)
	sig := kp.sign(msg)
	other := mustNewKeypair()
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == '0' {
			b[i] = '1'
		} else {
			b[i] = '0'
		}
		return string(b)
	}
	cases := []struct {
		name          string
		pub, msg, sig string
		want          bool
	}{
		{"genuine", kp.PublicHex(), msg, sig, true},
		{"other message", kp.PublicHex(), helloSignedString("mesh1", "member1", kp.PublicHex(), 1760000000001), sig, false},
		{"flipped signature", kp.PublicHex(), msg, flip(sig, 10), false},
		{"other key", other.PublicHex(), msg, sig, false},
		{"short signature", kp.PublicHex(), msg, sig[:126], false},
		{"not hex", kp.PublicHex(), msg, strings.Repeat("zz", 64), false},
		{"short key", kp.PublicHex()[:62], msg, sig, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := verifySignature(tc.pub, tc.msg, tc.sig); got != tc.want {
				t.Fatalf("verifySignature = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSignedStrings(t *testing.T) {
	cases := []struct{ name, got, want string }{
		{"hello", helloSignedString("m", "u", "pk", 17), "m|u|pk|17"},
		{"attestation", attestationSignedString("mpk", "spk", 1760043200000), "claudemesh-session-attest|mpk|spk|1760043200000"},
		{"session hello", sessionHelloSignedString("m", "mpk", "spk", 5), "claudemesh-session-hello|m|mpk|spk|5"},
		{"invite", inviteSignedString(1, "id", "slug", "ws://h/ws", 1700000000, "rk", "member", "opk"), "1|id|slug|ws://h/ws|1700000000|rk|member|opk"},
		{"mesh create", meshCreateSignedString("team", "pk", 9), "claudemesh-mesh-create|team|pk|9"},
		{"invite create", inviteCreateSignedString("team", "tok", 3, 11), "claudemesh-invite-create|team|tok|3|11"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestKeypairFromHex(t *testing.T) {
	a, b := mustNewKeypair(), mustNewKeypair()
	cases := []struct {
		name, pub, sec string
		ok             bool
	}{
		{"matching", a.PublicHex(), a.SecretHex(), true},
		{"mismatched public", b.PublicHex(), a.SecretHex(), false},
		{"secret with foreign public half", a.PublicHex(), a.SecretHex()[:64] + b.PublicHex(), false},
		{"short secret", a.PublicHex(), a.SecretHex()[:64], false},
		{"bad hex", a.PublicHex(), strings.Repeat("g", 128), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := keypairFromHex(tc.pub, tc.sec)
			if (err == nil) != tc.ok {
				t.Fatalf("keypairFromHex error = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// Vector produced by libsodium's crypto_sign_ed25519_{pk,sk}_to_curve25519
// for the RFC 8032 key.
func TestX25519ConversionFixedVector(t *testing.T) {
	kp := rfcKeypair(t)
	xpub, err := edPublicToX25519(kp.Public)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(xpub[:]); got != "d85e07ec22b0ad881537c2f44d662d1a143cf830c57aca4305d85c7a90f6b62e" {
		t.Errorf("pk_to_curve25519 = %s", got)
	}
	if got := hex.EncodeToString(edSecretToX25519(kp.Secret)[:]); got != "307c83864f2833cb427a2ef1c00a013cfdff2768d980c0a3a520f006904de94f" {
		t.Errorf("sk_to_curve25519 = %s", got)
	}
	identity := make([]byte, 32)
	identity[0] = 1
	if _, err := edPublicToX25519(identity); err == nil {
		t.Error("the identity point must be refused")
	}
}

func TestDMRoundTripAndTampering(t *testing.T) {
	alice, bob, eve := mustNewKeypair(), mustNewKeypair(), mustNewKeypair()
	nonce, ct, err := sealDM([]byte("hi bob"), bob.PublicHex(), alice)
	if err != nil {
		t.Fatal(err)
	}
	if raw, _ := unb64(ct); len(raw) != len("hi bob")+16 {
		t.Fatalf("ciphertext is %d bytes, want plaintext+16", len(raw))
	}
	got, err := openDM(nonce, ct, alice.PublicHex(), bob)
	if err != nil || string(got) != "hi bob" {
		t.Fatalf("openDM = %q, %v", got, err)
	}
	raw, _ := unb64(ct)
	raw[len(raw)-1] ^= 1
	cases := []struct {
		name, nonce, ct, sender string
		recipient               Keypair
	}{
		{"tampered body", nonce, b64(raw), alice.PublicHex(), bob},
		{"wrong recipient", nonce, ct, alice.PublicHex(), eve},
		{"wrong sender", nonce, ct, eve.PublicHex(), bob},
		{"short nonce", b64([]byte("short")), ct, alice.PublicHex(), bob},
		{"not base64", nonce, "***", alice.PublicHex(), bob},
		{"sender not hex", nonce, ct, "xyz", bob},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := openDM(tc.nonce, tc.ct, tc.sender, tc.recipient); err != errDecrypt {
				t.Fatalf("openDM error = %v, want errDecrypt", err)
			}
		})
	}
}

func TestRequestFingerprint(t *testing.T) {
	// Vectors from the JavaScript definition (testdata/sodium_oracle.js).
	meta := map[string]any{"b": 1.0, "a": []any{true, nil, "x<y>\u2028"}, "10": "ten", "2": "two", "é": 1.5e-7}
	cases := []struct {
		name, to, replyTo, priority string
		meta                        any
		body                        string
		want                        string
	}{
		{"dm with meta", "bob", "", "now", meta, "hello 🌍", "a1813d0746a38496bb530b01c8d4e7b654668a9520e072dabe532aa5c440e2d7"},
		{"broadcast default priority", "*", "", "", nil, "hi", "cdcdbd44fb611daebc4ca7d5802fde64dc74aa7486a5e9c5d51e3d26212868ed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fp, err := requestFingerprint(tc.to, tc.replyTo, tc.priority, tc.meta, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(fp[:]); got != tc.want {
				t.Fatalf("fingerprint = %s, want %s", got, tc.want)
			}
		})
	}
	got, _ := canonicalJSON(meta)
	if want := `{"2":"two","10":"ten","a":[true,null,"x<y>` + "\u2028" + `"],"b":1,"é":1.5e-7}`; got != want {
		t.Fatalf("canonicalJSON = %s, want %s", got, want)
	}
}

func TestDestinationOf(t *testing.T) {
	cases := []struct{ to, kind, ref string }{
		{"@frontend", "topic", "frontend"},
		{"*", "topic", "*"},
		{"bob", "dm", "bob"},
		{"#abc", "dm", "#abc"},
		{strings.Repeat("a", 64), "dm", strings.Repeat("a", 64)},
	}
	for _, tc := range cases {
		if k, r := destinationOf(tc.to); k != tc.kind || r != tc.ref {
			t.Errorf("destinationOf(%q) = (%s, %s), want (%s, %s)", tc.to, k, r, tc.kind, tc.ref)
		}
	}
}

// sodiumOracle runs testdata/sodium_oracle.js under node with
// libsodium-wrappers. It skips (or fails, when CLAUDEMESH_REQUIRE_SODIUM=1 as
// in CI) when node or the package is missing.
func sodiumOracle(t *testing.T, ops []map[string]any) []map[string]any {
	t.Helper()
	unavailable := func(reason string) {
		if os.Getenv("CLAUDEMESH_REQUIRE_SODIUM") == "1" {
			t.Fatalf("libsodium cross-check required but unavailable: %s", reason)
		}
		t.Skipf("libsodium cross-check skipped: %s (install with: npm install --prefix ~/.cache/claudemesh-test libsodium-wrappers)", reason)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("node is not on PATH")
	}
	var modules string
	candidates := filepath.SplitList(os.Getenv("NODE_PATH"))
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".cache", "claudemesh-test", "node_modules"))
	}
	for _, dir := range candidates {
		if _, err := os.Stat(filepath.Join(dir, "libsodium-wrappers")); err == nil {
			modules = dir
			break
		}
	}
	if modules == "" {
		unavailable("libsodium-wrappers is not installed")
	}
	in, _ := json.Marshal(ops)
	cmd := exec.Command(node, filepath.Join("testdata", "sodium_oracle.js"))
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node oracle: %v\n%s", err, stderr.String())
	}
	var results []map[string]any
	if err := json.Unmarshal(out, &results); err != nil {
		t.Fatalf("node oracle output: %v: %s", err, out)
	}
	return results
}

func TestCrossCheckWithLibsodium(t *testing.T) {
	ours := mustNewKeypair()
	hello := helloSignedString("mesh-1", "member-1", ours.PublicHex(), 1760000000000)
	ourSig := ours.sign(hello)
	nonce, ct, err := sealDM([]byte("from go ✓"), "", ours)
	if err == nil {
		t.Fatal("sealDM to an empty key must fail")
	}

	// Round 1: libsodium makes a keypair; everything else keys off it.
	theirs := sodiumOracle(t, []map[string]any{{"op": "keypair"}})[0]
	theirPub, theirSec := theirs["pub"].(string), theirs["sec"].(string)
	theirKP, err := keypairFromHex(theirPub, theirSec)
	if err != nil {
		t.Fatalf("libsodium keypair rejected: %v", err)
	}
	nonce, ct, err = sealDM([]byte("from go ✓"), theirPub, ours)
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]any{"z": []any{1.0, "two", map[string]any{"y": nil, "x": false}}, "1": "one", "A": "caps", "\t": "tab"}
	ops := []map[string]any{
		{"op": "verify", "pub": ours.PublicHex(), "msg": hello, "sig": ourSig},
		{"op": "sign", "sec": theirSec, "msg": hello},
		{"op": "open", "nonce": nonce, "ciphertext": ct, "from": ours.PublicHex(), "sec": theirSec},
		{"op": "seal", "msg": "from libsodium ✓", "to": ours.PublicHex(), "sec": theirSec},
		{"op": "convert", "pub": ours.PublicHex(), "sec": ours.SecretHex()},
		{"op": "fingerprint", "kind": "dm", "ref": "alice", "replyTo": "r1", "priority": "low", "meta": meta, "body": "body ✓"},
		{"op": "verify", "pub": ours.PublicHex(), "msg": hello + "x", "sig": ourSig},
	}
	res := sodiumOracle(t, ops)

	if res[0]["ok"] != true {
		t.Error("libsodium does not verify our hello signature")
	}
	if !verifySignature(theirPub, hello, res[1]["sig"].(string)) {
		t.Error("we do not verify libsodium's hello signature")
	}
	if res[1]["sig"].(string) != theirKP.sign(hello) {
		t.Error("ed25519 signatures differ for the same key and message")
	}
	if res[2]["ok"] != true || res[2]["msg"] != "from go ✓" {
		t.Errorf("libsodium opened our DM as %v", res[2])
	}
	got, err := openDM(res[3]["nonce"].(string), res[3]["ciphertext"].(string), theirPub, ours)
	if err != nil || string(got) != "from libsodium ✓" {
		t.Errorf("we opened libsodium's DM as %q, %v", got, err)
	}
	xpub, _ := edPublicToX25519(ours.Public)
	if res[4]["xpub"] != hex.EncodeToString(xpub[:]) || res[4]["xsec"] != hex.EncodeToString(edSecretToX25519(ours.Secret)[:]) {
		t.Errorf("X25519 conversion differs: libsodium %v", res[4])
	}
	fp, _ := requestFingerprint("alice", "r1", "low", meta, []byte("body ✓"))
	if res[5]["hex"] != hex.EncodeToString(fp[:]) {
		canon, _ := canonicalJSON(meta)
		t.Errorf("fingerprint differs: js %v (%v), go %x (%s)", res[5]["hex"], res[5]["canonical"], fp, canon)
	}
	if res[6]["ok"] != false {
		t.Error("libsodium verified a signature over a different message")
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := newID()
		if len(id) != 32 {
			t.Fatalf("newID() = %q, want 32 characters", id)
		}
		for _, c := range id {
			if !strings.ContainsRune(base62Alphabet, c) {
				t.Fatalf("newID() = %q has %q outside base62", id, c)
			}
		}
		if seen[id] {
			t.Fatalf("newID() repeated %q", id)
		}
		seen[id] = true
	}
}

// TestSharedKeyCache: a cached shared key opens what box.Seal made without
// the cache, bad keys are refused and not cached, and a full cache starts over.
func TestSharedKeyCache(t *testing.T) {
	alice, bob := mustNewKeypair(), mustNewKeypair()
	c := &sharedKeyCache{max: 2}
	var nonce [24]byte
	bx, err := edPublicToX25519(bob.Public)
	if err != nil {
		t.Fatal(err)
	}
	sealed := box.Seal(nil, []byte("hi bob"), &nonce, bx, edSecretToX25519(alice.Secret))
	for i := 0; i < 2; i++ { // derive, then from the cache
		k, err := c.shared(bob, alice.PublicHex())
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := box.OpenAfterPrecomputation(nil, sealed, &nonce, k); !ok || string(got) != "hi bob" {
			t.Fatalf("round %d: open = %q, %v", i, got, ok)
		}
	}
	if _, err := c.shared(bob, strings.Repeat("zz", 32)); err == nil {
		t.Fatal("non-hex peer key accepted")
	}
	if len(c.m) != 1 {
		t.Fatalf("cache holds %d keys after a refusal, want 1", len(c.m))
	}
	c.shared(alice, bob.PublicHex())
	c.shared(alice, mustNewKeypair().PublicHex())
	if len(c.m) > c.max {
		t.Fatalf("cache holds %d keys, max %d", len(c.m), c.max)
	}
}

// Sealed boxes interoperate with libsodium's crypto_box_seal both ways,
// and a box opens with its recipient's key only.
func TestSealedBoxCrossCheck(t *testing.T) {
	xpub, xsec, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("a 32-byte mesh root key.........")
	ours, err := sealAnonymous(msg, b64url(xpub[:]))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := openAnonymous(ours, xpub, xsec); err != nil || string(got) != string(msg) {
		t.Fatalf("openAnonymous(our box) = %q, %v", got, err)
	}
	otherPub, otherSec, _ := box.GenerateKey(rand.Reader)
	if _, err := openAnonymous(ours, otherPub, otherSec); err != errDecrypt {
		t.Fatalf("another key opened the box: %v", err)
	}
	if _, err := sealAnonymous(msg, "not-a-key"); err == nil {
		t.Fatal("sealing to a malformed key must fail")
	}

	theirs := sodiumOracle(t, []map[string]any{{"op": "box_keypair"}})[0]
	theirPub, theirSec := theirs["pub"].(string), theirs["sec"].(string)
	toThem, err := sealAnonymous(msg, theirPub)
	if err != nil {
		t.Fatal(err)
	}
	res := sodiumOracle(t, []map[string]any{
		{"op": "open_anon", "sealed": toThem, "pub": theirPub, "sec": theirSec},
		{"op": "seal_anon", "msg": b64url(msg), "to": b64url(xpub[:])},
	})
	if res[0]["ok"] != true || res[0]["msg"] != b64url(msg) {
		t.Errorf("libsodium could not open our sealed box: %v", res[0])
	}
	if got, err := openAnonymous(res[1]["sealed"].(string), xpub, xsec); err != nil || string(got) != string(msg) {
		t.Errorf("we could not open libsodium's sealed box: %q, %v", got, err)
	}
}

// TestNewMessageID: 32 base62 letters whose order follows their time.
func TestNewMessageID(t *testing.T) {
	base := time.UnixMilli(1_750_000_000_000)
	prev := ""
	for i := range 50 {
		id := newMessageID(base.Add(time.Duration(i*37) * time.Millisecond))
		if len(id) != 32 || strings.Trim(id, base62Alphabet) != "" {
			t.Fatalf("newMessageID = %q, want 32 base62 letters", id)
		}
		if id <= prev {
			t.Fatalf("newMessageID %q sorts before the earlier %q", id, prev)
		}
		prev = id
	}
}

// A claudemesh peer written against the reference stack (the `ws` package and
// libsodium-wrappers), for broker_interop_test.go. Input: one JSON object on
// stdin. Output: one JSON line per step on stdout.
//
// {invite, to, text}: joins a mesh with a v1 invite, says hello, sends one
// encrypted DM to the Go peer, waits for the Go peer's DM, acknowledges it
// and exits.
// {mode: "owner", broker_url, slug}: creates a mesh on the broker with a key
// of its own, signs a v1 invite to it, registers the invite and prints it.
const sodium = require("libsodium-wrappers");
const WebSocket = require("ws");

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (msg) => { out({ event: "error", message: msg }); process.exit(1); };

// The reference implementation's invite rule: the owner signs the fields'
// values joined by "|", the version first ("1|<mesh_id>|…").
const inviteSignedString = (p) => [p.v, p.mesh_id, p.mesh_slug, p.broker_url, p.expires_at,
  p.mesh_root_key, p.role, p.owner_pubkey].join("|");

const httpBaseOf = (brokerURL) => brokerURL.replace(/^ws/, "http").replace(/\/ws$/, "");

async function postJSON(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return res.json();
}

async function ownMesh(input) {
  const kp = sodium.crypto_sign_keypair();
  const pub = sodium.to_hex(kp.publicKey);
  const sign = (msg) => sodium.to_hex(sodium.crypto_sign_detached(sodium.from_string(msg), kp.privateKey));
  const base = httpBaseOf(input.broker_url);
  let ts = Date.now();
  const mesh = await postJSON(base + "/cli/mesh/create", {
    slug: input.slug, name: input.slug, pubkey: pub, display_name: "node-owner", timestamp: ts,
    signature: sign(["claudemesh-mesh-create", input.slug, pub, ts].join("|")),
  });
  if (!mesh.ok) fail("mesh create refused: " + JSON.stringify(mesh));
  // Key order as the reference CLI writes it; the signature comes last.
  const payload = {
    v: 1, mesh_id: mesh.id, mesh_slug: input.slug, broker_url: input.broker_url,
    expires_at: Math.floor(Date.now() / 1000) + 3600, mesh_root_key: mesh.root_key,
    role: "member", owner_pubkey: pub,
  };
  payload.signature = sign(inviteSignedString(payload));
  const token = sodium.to_base64(sodium.from_string(JSON.stringify(payload)), sodium.base64_variants.URLSAFE_NO_PADDING);
  ts = Date.now();
  const reg = await postJSON(base + "/cli/mesh/" + input.slug + "/invite", {
    token, max_uses: 1, timestamp: ts,
    signature: sign(["claudemesh-invite-create", input.slug, token, 1, ts].join("|")),
  });
  if (!reg.ok) fail("invite registration refused: " + JSON.stringify(reg));
  out({ event: "invite", url: "ic://join/" + token, meshId: mesh.id, ownerPubkey: pub });
}

async function main() {
  await sodium.ready;
  const B64 = sodium.base64_variants.ORIGINAL;
  const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
  if (input.mode === "owner") return ownMesh(input);

  // The v1 invite: ic://join/<base64url JSON>, signed by the owner key.
  const token = input.invite.replace(/^ic:\/\/join\//, "");
  const payload = JSON.parse(Buffer.from(sodium.from_base64(token, sodium.base64_variants.URLSAFE_NO_PADDING)).toString("utf8"));
  if (!sodium.crypto_sign_verify_detached(sodium.from_hex(payload.signature), sodium.from_string(inviteSignedString(payload)), sodium.from_hex(payload.owner_pubkey))) {
    fail("invite signature does not verify under libsodium");
  }

  const kp = sodium.crypto_sign_keypair();
  const pub = sodium.to_hex(kp.publicKey);
  const joined = await postJSON(httpBaseOf(payload.broker_url) + "/join",
    { invite_token: token, invite_payload: payload, peer_pubkey: pub, display_name: "node-peer" });
  if (!joined.ok) fail("join refused: " + JSON.stringify(joined));
  out({ event: "joined", memberId: joined.memberId, pubkey: pub });

  const ws = new WebSocket(payload.broker_url);
  const timer = setTimeout(() => fail("timed out"), 20000);
  ws.on("error", (e) => fail("socket error: " + e.message));
  ws.on("open", () => {
    const ts = Date.now();
    const msg = [payload.mesh_id, joined.memberId, pub, ts].join("|");
    ws.send(JSON.stringify({
      type: "hello", meshId: payload.mesh_id, memberId: joined.memberId, pubkey: pub,
      sessionId: "node-" + process.pid, pid: process.pid, cwd: process.cwd(), peerType: "ai",
      channel: "claudemesh-daemon", timestamp: ts,
      signature: sodium.to_hex(sodium.crypto_sign_detached(sodium.from_string(msg), kp.privateKey)),
    }));
  });
  ws.on("message", (raw) => {
    const f = JSON.parse(raw.toString());
    if (f.type === "hello_ack") {
      const nonce = sodium.randombytes_buf(sodium.crypto_box_NONCEBYTES);
      const ct = sodium.crypto_box_easy(sodium.from_string(input.text), nonce,
        sodium.crypto_sign_ed25519_pk_to_curve25519(sodium.from_hex(input.to)),
        sodium.crypto_sign_ed25519_sk_to_curve25519(kp.privateKey));
      ws.send(JSON.stringify({
        type: "send", id: "node-1", client_message_id: "node-1", targetSpec: input.to, priority: "now",
        nonce: sodium.to_base64(nonce, B64), ciphertext: sodium.to_base64(ct, B64),
      }));
    } else if (f.type === "ack") {
      if (f.error) fail("send refused: " + f.error);
      out({ event: "sent", messageId: f.messageId });
    } else if (f.type === "push" && f.subtype !== "system") {
      let text;
      try {
        text = sodium.to_string(sodium.crypto_box_open_easy(sodium.from_base64(f.ciphertext, B64), sodium.from_base64(f.nonce, B64),
          sodium.crypto_sign_ed25519_pk_to_curve25519(sodium.from_hex(f.senderPubkey)),
          sodium.crypto_sign_ed25519_sk_to_curve25519(kp.privateKey)));
      } catch (e) {
        fail("could not open the Go peer's DM");
      }
      ws.send(JSON.stringify({ type: "client_ack", clientMessageId: f.client_message_id || f.messageId, brokerMessageId: f.messageId }));
      out({ event: "received", text, senderName: f.senderName, senderMemberPubkey: f.senderMemberPubkey });
      clearTimeout(timer);
      ws.close(1000, "done");
    }
  });
  ws.on("close", () => process.exit(0));
}

main().catch((e) => fail(String(e && e.stack || e)));

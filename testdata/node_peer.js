// A claudemesh peer written against the reference stack (the `ws` package and
// libsodium-wrappers), for broker_interop_test.go. It joins a mesh with a v1
// invite, says hello, sends one encrypted DM to the Go peer, waits for the Go
// peer's DM, acknowledges it and exits. Input: one JSON object on stdin
// {invite, to, text}. Output: one JSON line per step on stdout.
const sodium = require("libsodium-wrappers");
const WebSocket = require("ws");

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (msg) => { out({ event: "error", message: msg }); process.exit(1); };

async function main() {
  await sodium.ready;
  const B64 = sodium.base64_variants.ORIGINAL;
  const input = JSON.parse(require("fs").readFileSync(0, "utf8"));

  // The v1 invite: ic://join/<base64url JSON>, signed by the owner key.
  const token = input.invite.replace(/^ic:\/\/join\//, "");
  const payload = JSON.parse(Buffer.from(sodium.from_base64(token, sodium.base64_variants.URLSAFE_NO_PADDING)).toString("utf8"));
  const signed = ["v", payload.mesh_id, payload.mesh_slug, payload.broker_url, payload.expires_at,
    payload.mesh_root_key, payload.role, payload.owner_pubkey].join("|");
  if (!sodium.crypto_sign_verify_detached(sodium.from_hex(payload.signature), sodium.from_string(signed), sodium.from_hex(payload.owner_pubkey))) {
    fail("invite signature does not verify under libsodium");
  }

  const kp = sodium.crypto_sign_keypair();
  const pub = sodium.to_hex(kp.publicKey);
  const httpBase = payload.broker_url.replace(/^ws/, "http").replace(/\/ws$/, "");
  const res = await fetch(httpBase + "/join", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ invite_token: token, invite_payload: payload, peer_pubkey: pub, display_name: "node-peer" }),
  });
  const joined = await res.json();
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

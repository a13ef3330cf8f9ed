// An independent implementation for crypto_test.go: libsodium (through
// libsodium-wrappers) and plain JavaScript JSON. Reads a JSON array of
// operations on stdin, writes a JSON array of results on stdout.
const sodium = require("libsodium-wrappers");

function canonical(value) {
  // Rebuild objects with keys inserted in sorted order, then JSON.stringify:
  // the fingerprint definition claudemesh peers use.
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const k of Object.keys(value).sort()) out[k] = canonical(value[k]);
    return out;
  }
  return value;
}

function sha256(bytes) {
  return require("crypto").createHash("sha256").update(bytes).digest();
}

function fingerprint(op) {
  const parts = ["1", op.kind, op.ref, op.replyTo || "", op.priority || "next",
    op.meta === undefined || op.meta === null ? "" : JSON.stringify(canonical(op.meta))];
  const chunks = [];
  for (const p of parts) { chunks.push(Buffer.from(p, "utf8")); chunks.push(Buffer.from([0])); }
  chunks.push(sha256(Buffer.from(op.body, "utf8")));
  return { hex: sha256(Buffer.concat(chunks)).toString("hex"), canonical: parts[5] };
}

async function main() {
  await sodium.ready;
  const B64 = sodium.base64_variants.ORIGINAL;
  const URL = sodium.base64_variants.URLSAFE_NO_PADDING;
  const ops = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const out = ops.map((op) => {
    switch (op.op) {
      case "keypair": {
        const kp = sodium.crypto_sign_keypair();
        return { pub: sodium.to_hex(kp.publicKey), sec: sodium.to_hex(kp.privateKey) };
      }
      case "sign":
        return { sig: sodium.to_hex(sodium.crypto_sign_detached(sodium.from_string(op.msg), sodium.from_hex(op.sec))) };
      case "verify":
        return { ok: sodium.crypto_sign_verify_detached(sodium.from_hex(op.sig), sodium.from_string(op.msg), sodium.from_hex(op.pub)) };
      case "convert":
        return {
          xpub: sodium.to_hex(sodium.crypto_sign_ed25519_pk_to_curve25519(sodium.from_hex(op.pub))),
          xsec: sodium.to_hex(sodium.crypto_sign_ed25519_sk_to_curve25519(sodium.from_hex(op.sec))),
        };
      case "seal": {
        const nonce = sodium.randombytes_buf(sodium.crypto_box_NONCEBYTES);
        const ct = sodium.crypto_box_easy(sodium.from_string(op.msg), nonce,
          sodium.crypto_sign_ed25519_pk_to_curve25519(sodium.from_hex(op.to)),
          sodium.crypto_sign_ed25519_sk_to_curve25519(sodium.from_hex(op.sec)));
        return { nonce: sodium.to_base64(nonce, B64), ciphertext: sodium.to_base64(ct, B64) };
      }
      case "open": {
        try {
          const pt = sodium.crypto_box_open_easy(sodium.from_base64(op.ciphertext, B64), sodium.from_base64(op.nonce, B64),
            sodium.crypto_sign_ed25519_pk_to_curve25519(sodium.from_hex(op.from)),
            sodium.crypto_sign_ed25519_sk_to_curve25519(sodium.from_hex(op.sec)));
          return { ok: true, msg: sodium.to_string(pt) };
        } catch (e) {
          return { ok: false };
        }
      }
      case "box_keypair": {
        // An X25519 keypair for sealed boxes, base64url without padding.
        const kp = sodium.crypto_box_keypair();
        return { pub: sodium.to_base64(kp.publicKey, URL), sec: sodium.to_base64(kp.privateKey, URL) };
      }
      case "seal_anon":
        return { sealed: sodium.to_base64(sodium.crypto_box_seal(sodium.from_base64(op.msg, URL), sodium.from_base64(op.to, URL)), URL) };
      case "open_anon": {
        try {
          const msg = sodium.crypto_box_seal_open(sodium.from_base64(op.sealed, URL), sodium.from_base64(op.pub, URL), sodium.from_base64(op.sec, URL));
          return { ok: true, msg: sodium.to_base64(msg, URL) };
        } catch (e) {
          return { ok: false };
        }
      }
      case "fingerprint":
        return fingerprint(op);
      case "audit_hash": {
        // The audit log's entry hash over the payload's canonical JSON.
        const line = [op.prevHash, op.meshId, op.eventType, op.actor === null ? "null" : op.actor,
          JSON.stringify(canonical(op.payload)), op.createdAt].join("|");
        return { hash: sha256(Buffer.from(line, "utf8")).toString("hex") };
      }
      default:
        throw new Error("unknown op " + op.op);
    }
  });
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });

import { equal, notDeepEqual } from "node:assert/strict";
import {
  createEphemeralKey,
  deriveResumeKey,
  deriveResumeSecret,
  importResumeKey,
  randomId,
  signProof,
  signRetake,
  verifyProof,
  verifyRetake,
} from "../../src/protocol/resume_auth.ts";

async function pair() {
  const client = await createEphemeralKey();
  const server = await createEphemeralKey();
  const sessionId = randomId();
  const clientKey = await deriveResumeKey(client, server.publicKey, sessionId, client.publicKey, server.publicKey);
  const serverKey = await deriveResumeKey(server, client.publicKey, sessionId, client.publicKey, server.publicKey);
  return { client, server, sessionId, clientKey, serverKey };
}

Deno.test("both ends derive the same key from public keys alone", async () => {
  const { sessionId, clientKey, serverKey } = await pair();
  const input = { sessionId, clientNonce: randomId(), serverNonce: randomId(), receivedOffset: 12345 };
  const proof = await signProof(clientKey, "client", input);
  equal(proof.length, 32);
  equal(await verifyProof(serverKey, "client", input, proof), true);
});

Deno.test("a proof is bound to the nonces, the offset, the role and the session", async () => {
  const { sessionId, clientKey, serverKey } = await pair();
  const input = { sessionId, clientNonce: randomId(), serverNonce: randomId(), receivedOffset: 7 };
  const proof = await signProof(clientKey, "client", input);
  // A recorded proof replayed against a fresh server nonce fails.
  equal(await verifyProof(serverKey, "client", { ...input, serverNonce: randomId() }, proof), false);
  equal(await verifyProof(serverKey, "client", { ...input, clientNonce: randomId() }, proof), false);
  equal(await verifyProof(serverKey, "client", { ...input, receivedOffset: 8 }, proof), false);
  equal(await verifyProof(serverKey, "server", input, proof), false, "a client proof is not a server proof");
  equal(await verifyProof(serverKey, "client", { ...input, sessionId: randomId() }, proof), false);
  const tampered = proof.slice();
  tampered[0] = (tampered[0] as number) ^ 1;
  equal(await verifyProof(serverKey, "client", input, tampered), false);
});

Deno.test("another session's key does not verify", async () => {
  const a = await pair();
  const b = await pair();
  const input = { sessionId: a.sessionId, clientNonce: randomId(), serverNonce: randomId(), receivedOffset: 0 };
  const proof = await signProof(a.clientKey, "client", input);
  equal(await verifyProof(b.serverKey, "client", input, proof), false);
  notDeepEqual(a.client.publicKey, b.client.publicKey);
});

Deno.test("a retake proof needs the session's key and is bound to the server's nonce, the token and the role", async () => {
  const { sessionId, clientKey, serverKey } = await pair();
  const other = await pair();
  const input = { sessionId, openToken: randomId(), serverNonce: randomId() };
  const proof = await signRetake(clientKey, "client", input);
  equal(await verifyRetake(serverKey, "client", input, proof), true);
  equal(await verifyRetake(serverKey, "client", { ...input, serverNonce: randomId() }, proof), false, "replayed");
  equal(await verifyRetake(serverKey, "client", { ...input, openToken: randomId() }, proof), false);
  equal(await verifyRetake(serverKey, "server", input, proof), false, "a client proof is not a server proof");
  equal(await verifyRetake(other.serverKey, "client", input, proof), false, "another key");
  const resume = { sessionId, clientNonce: input.openToken, serverNonce: input.serverNonce, receivedOffset: 0 };
  equal(await verifyProof(serverKey, "client", resume, proof), false, "a retake proof is not a resume proof");
});

Deno.test("the kept 32-byte secret gives the same key as the HKDF-derived HMAC key of protocol version 2", async () => {
  const client = await createEphemeralKey();
  const server = await createEphemeralKey();
  const sessionId = randomId();
  const secret = await deriveResumeSecret(server, client.publicKey, sessionId, client.publicKey, server.publicKey);
  equal(secret.length, 32);
  // The derivation as first written (HKDF straight to an HMAC key): keys of both kinds must agree.
  const peer = await crypto.subtle.importKey("raw", server.publicKey as BufferSource, { name: "X25519" }, false, []);
  const shared = await crypto.subtle.deriveBits({ name: "X25519", public: peer }, client.privateKey, 256);
  const ikm = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  const info = new Uint8Array([
    ...new TextEncoder().encode("protheus-broker resume key v1"),
    ...client.publicKey,
    ...server.publicKey,
  ]);
  const direct = await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: sessionId as BufferSource, info: info as BufferSource },
    ikm,
    { name: "HMAC", hash: "SHA-256", length: 256 },
    false,
    ["sign", "verify"],
  );
  const input = { sessionId, clientNonce: randomId(), serverNonce: randomId(), receivedOffset: 7 };
  const proof = await signProof(direct, "client", input);
  equal(await verifyProof(await importResumeKey(secret), "client", input, proof), true);
});

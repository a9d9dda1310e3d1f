/**
 * Proof of session ownership for resume, on WebCrypto.
 *
 * At creation both ends make an ephemeral X25519 key pair, exchange public
 * keys in HELLO_NEW / WELCOME and derive the same shared secret, from which
 * HKDF-SHA-256 derives an HMAC key. The secret never crosses the wire. A
 * resume is proven by an HMAC over the session id, fresh nonces from both
 * ends and the offset the prover reports, so a recorded proof is worthless
 * once the server's nonce changes; the server proves itself the same way.
 * @module
 */

import { concatBytes, ID_SIZE, PUBLIC_KEY_SIZE, writeU64 } from "./frames.ts";

/** An ephemeral key pair with its public half exported. */
export interface EphemeralKey {
  /** The private key (never leaves the process). */
  privateKey: CryptoKey;
  /** The raw 32-byte public key. */
  publicKey: Uint8Array;
}

/** Which side produced a proof; each side's proofs are distinct. */
export type ProofRole = "client" | "server";

const INFO = new TextEncoder().encode("protheus-broker resume key v1");

let pending = 0;

/**
 * WebCrypto calls in flight. They complete on the runtime's event loop,
 * not as promise reactions, so the simulation tests (tests/sim/) wait for
 * this to reach 0 before they move their virtual clock.
 */
export function cryptoInFlight(): number {
  return pending;
}

/** Counts `operation` in cryptoInFlight until it settles. */
function tracked<T>(operation: Promise<T>): Promise<T> {
  pending++;
  return operation.finally(() => pending--);
}

/** Makes an ephemeral X25519 key pair. */
export async function createEphemeralKey(): Promise<EphemeralKey> {
  const pair = await tracked(crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"])) as CryptoKeyPair;
  const publicKey = new Uint8Array(await tracked(crypto.subtle.exportKey("raw", pair.publicKey)));
  return { privateKey: pair.privateKey, publicKey };
}

/** Random bytes for session ids and nonces. */
export function randomId(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(ID_SIZE));
}

/**
 * Derives the session's resume key from our private key and the peer's
 * public key; both public keys and the session id are bound into it.
 */
export async function deriveResumeKey(
  own: EphemeralKey,
  peerPublicKey: Uint8Array,
  sessionId: Uint8Array,
  clientPublicKey: Uint8Array,
  serverPublicKey: Uint8Array,
): Promise<CryptoKey> {
  return await importResumeKey(
    await deriveResumeSecret(own, peerPublicKey, sessionId, clientPublicKey, serverPublicKey),
  );
}

/**
 * The 32 bytes of the resume key (see deriveResumeKey): what broker-server
 * keeps of an ended session, a CryptoKey costing some 2 KiB of heap.
 */
export async function deriveResumeSecret(
  own: EphemeralKey,
  peerPublicKey: Uint8Array,
  sessionId: Uint8Array,
  clientPublicKey: Uint8Array,
  serverPublicKey: Uint8Array,
): Promise<Uint8Array> {
  if (peerPublicKey.length !== PUBLIC_KEY_SIZE) {
    throw new RangeError(`Cannot use a peer public key of ${peerPublicKey.length} bytes: expected 32`);
  }
  const peer = await tracked(
    crypto.subtle.importKey("raw", peerPublicKey as BufferSource, { name: "X25519" }, false, []),
  );
  const shared = await tracked(crypto.subtle.deriveBits({ name: "X25519", public: peer }, own.privateKey, 256));
  const ikm = await tracked(crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]));
  const info = concatBytes(INFO, clientPublicKey, serverPublicKey);
  const bits = await tracked(crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: sessionId as BufferSource, info: info as BufferSource },
    ikm,
    256,
  ));
  return new Uint8Array(bits);
}

/** The HMAC-SHA-256 resume key of a secret from deriveResumeSecret. */
export function importResumeKey(secret: Uint8Array): Promise<CryptoKey> {
  return tracked(
    crypto.subtle.importKey("raw", secret as BufferSource, { name: "HMAC", hash: "SHA-256", length: 256 }, false, [
      "sign",
      "verify",
    ]),
  );
}

/** What a resume proof covers. */
export interface ProofInput {
  /** The session id. */
  sessionId: Uint8Array;
  /** The client's nonce from HELLO_RESUME. */
  clientNonce: Uint8Array;
  /** The server's nonce from CHALLENGE. */
  serverNonce: Uint8Array;
  /** The offset the prover says it has received. */
  receivedOffset: number;
}

function transcript(role: ProofRole, input: ProofInput): Uint8Array {
  const offset = new Uint8Array(8);
  writeU64(offset, 0, input.receivedOffset);
  const label = new TextEncoder().encode(role === "client" ? "client proof" : "server proof");
  return concatBytes(label, input.sessionId, input.clientNonce, input.serverNonce, offset);
}

async function hmac(key: CryptoKey, transcript: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await tracked(crypto.subtle.sign("HMAC", key, transcript as BufferSource)));
}

/** HMAC check in constant time (WebCrypto's verify). */
async function hmacMatches(key: CryptoKey, transcript: Uint8Array, mac: Uint8Array): Promise<boolean> {
  return await tracked(crypto.subtle.verify("HMAC", key, mac as BufferSource, transcript as BufferSource));
}

/** Computes the proof `role` sends. */
export async function signProof(key: CryptoKey, role: ProofRole, input: ProofInput): Promise<Uint8Array> {
  return await hmac(key, transcript(role, input));
}

/** Checks a proof in constant time. */
export async function verifyProof(
  key: CryptoKey,
  role: ProofRole,
  input: ProofInput,
  mac: Uint8Array,
): Promise<boolean> {
  return await hmacMatches(key, transcript(role, input), mac);
}

/**
 * What the proofs of a retaken opening cover. The open token and both
 * public keys travel in clear, so only the resume key that the first
 * attempt derived (which needs the client's private key) can prove that a
 * retried opening comes from the client that made it; the server's fresh
 * nonce stops replays.
 */
export interface RetakeInput {
  /** The session id from the (re-sent) WELCOME. */
  sessionId: Uint8Array;
  /** The client's open token from HELLO_NEW. */
  openToken: Uint8Array;
  /** The server's nonce from WELCOME_BACK. */
  serverNonce: Uint8Array;
}

function retakeTranscript(role: ProofRole, input: RetakeInput): Uint8Array {
  const label = new TextEncoder().encode(role === "client" ? "client retake" : "server retake");
  return concatBytes(label, input.sessionId, input.openToken, input.serverNonce);
}

/** Computes the retake proof `role` sends, with the session's resume key. */
export async function signRetake(key: CryptoKey, role: ProofRole, input: RetakeInput): Promise<Uint8Array> {
  return await hmac(key, retakeTranscript(role, input));
}

/** Checks a retake proof in constant time. */
export async function verifyRetake(
  key: CryptoKey,
  role: ProofRole,
  input: RetakeInput,
  mac: Uint8Array,
): Promise<boolean> {
  return await hmacMatches(key, retakeTranscript(role, input), mac);
}

/** An HMAC key from the shared ADMISSION_KEY text. */
export async function importAdmissionKey(secret: string): Promise<CryptoKey> {
  return await tracked(crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret) as BufferSource,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  ));
}

/**
 * What an admission proof covers: the client's ECDH key and open token and
 * the server's fresh nonce (client proof); plus the server's key, the
 * session id and the timers (server proof). Binding both public keys stops
 * a man in the middle from substituting his own; the nonce stops replays.
 */
export interface AdmissionInput {
  /** The client's public key from HELLO_NEW. */
  clientPublicKey: Uint8Array;
  /** The client's open token from HELLO_NEW. */
  openToken: Uint8Array;
  /** The server's nonce from CHALLENGE. */
  serverNonce: Uint8Array;
  /** For the server proof: the WELCOME payload without its proof. */
  welcome?: Uint8Array;
}

function admissionTranscript(role: ProofRole, input: AdmissionInput): Uint8Array {
  const label = new TextEncoder().encode(role === "client" ? "admission client" : "admission server");
  return concatBytes(
    label,
    input.clientPublicKey,
    input.openToken,
    input.serverNonce,
    input.welcome ?? new Uint8Array(0),
  );
}

/** Signs an admission proof. */
export async function signAdmission(key: CryptoKey, role: ProofRole, input: AdmissionInput): Promise<Uint8Array> {
  return await hmac(key, admissionTranscript(role, input));
}

/** Checks an admission proof in constant time. */
export async function verifyAdmission(
  key: CryptoKey,
  role: ProofRole,
  input: AdmissionInput,
  mac: Uint8Array,
): Promise<boolean> {
  return await hmacMatches(key, admissionTranscript(role, input), mac);
}

/**
 * The wire format between broker-servers of one site (peers), and between a
 * broker-server and the process that takes over from it. Without I/O.
 *
 * A peer connection opens with a mutual proof of the cluster key over fresh
 * nonces from both sides, so that neither side says anything to a stranger
 * and an old transcript replayed later fails:
 *
 * ```
 * dialer   -> "PBRC" version nonceD(16)
 * listener -> "PBRC" version nonceL(16) mac("listener", nonceD, nonceL)(32)
 * dialer   -> mac("dialer", nonceD, nonceL)(32) mac("request", nonceD, nonceL, body)(32) request
 * listener -> mac("reply", nonceD, nonceL, body)(32) reply
 * ```
 *
 * Requests and replies are one message each: a u32 big-endian length and a
 * JSON object (at most MAX_MESSAGE_BYTES), each signed with both nonces, so
 * that nobody on the path can change or swap them. After a relay request is granted
 * the connection carries a client's link byte for byte (see relay.ts).
 * @module
 */

import { ID_SIZE, MAC_SIZE } from "../protocol/frames.ts";

/** The magic that opens a peer connection: "PBRC" (a client link opens with "PBRK"). */
export const CLUSTER_MAGIC = new Uint8Array([0x50, 0x42, 0x52, 0x43]);
/** Version of the peer protocol. */
export const CLUSTER_VERSION = 1;
/** Size of the dialer's opening: magic, version, nonce. */
export const DIALER_OPENING_SIZE = 5 + ID_SIZE;
/** Size of the listener's answer: magic, version, nonce, proof. */
export const LISTENER_OPENING_SIZE = 5 + ID_SIZE + MAC_SIZE;
/** Largest control message accepted. */
export const MAX_MESSAGE_BYTES = 64 * 1024;
/** Size of the holder tag that ends every session id. */
export const TAG_SIZE = 4;

/** What a dialer asks. */
export type PeerRequest =
  /** Who are you, what do you hold: the answer is a PeerInfo. */
  | { op: "hello" }
  /** Carry this client's link to the session `tag` holds; the client was at `client`. */
  | { op: "relay"; tag: string; client: string }
  /** Do you hold, or are you opening, the session of this open token (hex)? The answer is an OpeningAnswer. */
  | { op: "opening"; token: string }
  /** The new process (pid) has bound the ports after a takeover: the old one may exit once its sessions end. */
  | { op: "settled"; pid: number }
  /** A new process on this host takes over: stop accepting; answer a Handover. */
  | { op: "takeover"; version: string; pid: number };

/** A broker-server process as a peer sees it. */
export interface PeerInfo {
  /** Its holder tag. */
  tag: string;
  /** Its version. */
  version: string;
  /** Its process id. */
  pid: number;
  /** Its live sessions. */
  sessions: number;
  /** Every tag a relay to it reaches: its own and those of the processes it took over from. */
  holders: string[];
}

/** A process that was taken over from: where the new one reaches it on the loopback. */
export interface Predecessor {
  /** Its holder tag. */
  tag: string;
  /** Its loopback port for relays. */
  port: number;
  /** Its version. */
  version: string;
  /** Its process id. */
  pid: number;
}

/** The answer to a takeover: the processes the new one must relay to (the answering one first). */
export interface Handover {
  ok: true;
  predecessors: Predecessor[];
}

/** The answer to a relay request. */
export type RelayAnswer = { ok: true } | { ok: false; reason: string };

/** Thrown for bytes that do not follow this format. */
export class PeerProtocolError extends Error {
  override name = "PeerProtocolError";
}

/** The dialer's opening. */
export function encodeDialerOpening(nonce: Uint8Array): Uint8Array {
  const out = new Uint8Array(DIALER_OPENING_SIZE);
  out.set(CLUSTER_MAGIC);
  out[4] = CLUSTER_VERSION;
  out.set(nonce, 5);
  return out;
}

/** The listener's answer. */
export function encodeListenerOpening(nonce: Uint8Array, mac: Uint8Array): Uint8Array {
  const out = new Uint8Array(LISTENER_OPENING_SIZE);
  out.set(CLUSTER_MAGIC);
  out[4] = CLUSTER_VERSION;
  out.set(nonce, 5);
  out.set(mac, 5 + ID_SIZE);
  return out;
}

/** The nonce of an opening, after checking magic and version. */
export function decodeOpening(bytes: Uint8Array): { nonce: Uint8Array; mac: Uint8Array } {
  if (bytes.length < DIALER_OPENING_SIZE || !CLUSTER_MAGIC.every((b, i) => bytes[i] === b)) {
    throw new PeerProtocolError("not a broker-server peer (wrong magic)");
  }
  if (bytes[4] !== CLUSTER_VERSION) {
    throw new PeerProtocolError(
      `the peer speaks cluster protocol version ${
        bytes[4]
      }, this broker-server speaks version ${CLUSTER_VERSION}: upgrade both to the same version`,
    );
  }
  return { nonce: bytes.slice(5, 5 + ID_SIZE), mac: bytes.slice(5 + ID_SIZE) };
}

/** A control message: length and JSON. */
export function encodeMessage(message: unknown): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(message));
  if (json.length > MAX_MESSAGE_BYTES) throw new RangeError(`peer message of ${json.length} bytes is too long`);
  const out = new Uint8Array(4 + json.length);
  new DataView(out.buffer).setUint32(0, json.length);
  out.set(json, 4);
  return out;
}

/** The length in a message's first four bytes, checked against MAX_MESSAGE_BYTES. */
export function messageLength(header: Uint8Array): number {
  const length = new DataView(header.buffer, header.byteOffset, 4).getUint32(0);
  if (length > MAX_MESSAGE_BYTES) throw new PeerProtocolError(`peer message of ${length} bytes is too long`);
  return length;
}

/** A message body as a JSON object. */
export function decodeMessage(body: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    throw new PeerProtocolError("peer message is not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new PeerProtocolError("peer message is not a JSON object");
  }
  return value as Record<string, unknown>;
}

/** A request, checked field by field. */
export function parseRequest(message: Record<string, unknown>): PeerRequest {
  const { op } = message;
  if (op === "hello") return { op };
  if (op === "relay" && isTag(message.tag) && typeof message.client === "string" && message.client.length < 100) {
    return { op, tag: message.tag, client: message.client };
  }
  if (op === "opening" && typeof message.token === "string" && /^[0-9a-f]{32}$/.test(message.token)) {
    return { op, token: message.token };
  }
  if (op === "settled" && Number.isSafeInteger(message.pid)) return { op, pid: message.pid as number };
  if (op === "takeover" && typeof message.version === "string" && Number.isSafeInteger(message.pid)) {
    return { op, version: message.version.slice(0, 64), pid: message.pid as number };
  }
  throw new PeerProtocolError(`unknown peer request ${JSON.stringify(String(op)).slice(0, 40)}`);
}

/** A hello answer, checked. */
export function parsePeerInfo(message: Record<string, unknown>): PeerInfo {
  const { tag, version, pid, sessions, holders } = message;
  if (
    isTag(tag) && typeof version === "string" && Number.isSafeInteger(pid) && Number.isSafeInteger(sessions) &&
    Array.isArray(holders) && holders.length <= 64 && holders.every(isTag)
  ) {
    return { tag, version: version.slice(0, 64), pid: pid as number, sessions: sessions as number, holders };
  }
  throw new PeerProtocolError("malformed hello answer");
}

/** A takeover answer, checked. */
export function parseHandover(message: Record<string, unknown>): Handover {
  const list = message.predecessors;
  if (message.ok !== true || !Array.isArray(list) || list.length === 0 || list.length > 64) {
    throw new PeerProtocolError(
      typeof message.reason === "string" ? message.reason.slice(0, 200) : "malformed takeover answer",
    );
  }
  const predecessors = list.map((p: Record<string, unknown>): Predecessor => {
    if (
      isTag(p?.tag) && Number.isInteger(p.port) && (p.port as number) > 0 && (p.port as number) < 65536 &&
      typeof p.version === "string" && Number.isSafeInteger(p.pid)
    ) {
      return { tag: p.tag, port: p.port as number, version: p.version.slice(0, 64), pid: p.pid as number };
    }
    throw new PeerProtocolError("malformed takeover answer");
  });
  return { ok: true, predecessors };
}

/** The answer to an opening question: whether the peer holds it, and its tag (to relay to). */
export interface OpeningAnswer {
  held: boolean;
  tag: string;
}

/** An opening answer, checked. */
export function parseOpeningAnswer(message: Record<string, unknown>): OpeningAnswer {
  if (typeof message.held === "boolean" && isTag(message.tag)) return { held: message.held, tag: message.tag };
  throw new PeerProtocolError("malformed opening answer");
}

/** A relay answer, checked. */
export function parseRelayAnswer(message: Record<string, unknown>): RelayAnswer {
  if (message.ok === true) return { ok: true };
  return { ok: false, reason: typeof message.reason === "string" ? message.reason.slice(0, 200) : "refused" };
}

/** Whether `value` is a holder tag as text (8 lowercase hex digits). */
export function isTag(value: unknown): value is string {
  return typeof value === "string" && /^[0-9a-f]{8}$/.test(value);
}

/**
 * The holder tag of a session id, as text: its last TAG_SIZE bytes (the
 * first ones stay random: logs name sessions by them).
 */
export function tagOf(sessionId: Uint8Array): string {
  let tag = "";
  for (let i = sessionId.length - TAG_SIZE; i < sessionId.length; i++) {
    tag += (sessionId[i] ?? 0).toString(16).padStart(2, "0");
  }
  return tag;
}

/** A fresh holder tag: random, never all zeros. */
export function newTag(): Uint8Array {
  const tag = new Uint8Array(TAG_SIZE);
  do crypto.getRandomValues(tag); while (tag.every((b) => b === 0));
  return tag;
}

/** The cluster key as an HMAC key. */
export function importClusterKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
}

/** Who signs: the two openings, and the request and reply (bound to the same nonces, so neither can be swapped). */
export type PeerRole = "dialer" | "listener" | "request" | "reply";

function transcript(role: PeerRole, dialerNonce: Uint8Array, listenerNonce: Uint8Array, body: Uint8Array): Uint8Array {
  const label = new TextEncoder().encode(`broker-server peer ${role}`);
  const out = new Uint8Array(label.length + 2 * ID_SIZE + body.length);
  out.set(label);
  out.set(dialerNonce, label.length);
  out.set(listenerNonce, label.length + ID_SIZE);
  out.set(body, label.length + 2 * ID_SIZE);
  return out;
}

/** The proof `role` sends over both nonces (and a message's `body`). */
export async function signPeer(
  key: CryptoKey,
  role: PeerRole,
  dialerNonce: Uint8Array,
  listenerNonce: Uint8Array,
  body: Uint8Array = new Uint8Array(0),
): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.sign("HMAC", key, transcript(role, dialerNonce, listenerNonce, body) as BufferSource),
  );
}

/** Whether `mac` is `role`'s proof over both nonces (and `body`), in constant time. */
export function verifyPeer(
  key: CryptoKey,
  role: PeerRole,
  dialerNonce: Uint8Array,
  listenerNonce: Uint8Array,
  mac: Uint8Array,
  body: Uint8Array = new Uint8Array(0),
): Promise<boolean> {
  if (mac.length !== MAC_SIZE) return Promise.resolve(false);
  return crypto.subtle.verify(
    "HMAC",
    key,
    mac as BufferSource,
    transcript(role, dialerNonce, listenerNonce, body) as BufferSource,
  );
}

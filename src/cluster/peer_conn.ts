/**
 * Peer connections on the wire (wire.ts): the dialer's and the listener's
 * side of the opening proofs and of one request and its reply, each within
 * a deadline. Reads take exactly the bytes of the step at hand, so that
 * whatever follows (a relayed link) is left in the socket.
 * @module
 */

import { randomId } from "../protocol/resume_auth.ts";
import type { NetConn, Network } from "../session/network.ts";
import { closeQuietly, type Transport, writeAll } from "../session/transport.ts";
import {
  decodeMessage,
  decodeOpening,
  DIALER_OPENING_SIZE,
  encodeDialerOpening,
  encodeListenerOpening,
  encodeMessage,
  LISTENER_OPENING_SIZE,
  messageLength,
  parseRequest,
  PeerProtocolError,
  type PeerRequest,
  signPeer,
  verifyPeer,
} from "./wire.ts";
import { MAC_SIZE } from "../protocol/frames.ts";

/** Reads exactly `n` bytes; throws PeerProtocolError when the peer closes first. */
export async function readExact(transport: Transport, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const read = await transport.read(out.subarray(got));
    if (read === null) throw new PeerProtocolError(`the peer closed the connection after ${got} of ${n} bytes`);
    got += read;
  }
  return out;
}

/** Runs `step` on `conn`, closing the connection when it takes longer than `ms` (the step then throws). */
export async function withDeadline<T>(conn: Transport, ms: number, what: string, step: () => Promise<T>): Promise<T> {
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    closeQuietly(conn);
  }, ms);
  try {
    return await step();
  } catch (err) {
    if (late) throw new Deno.errors.TimedOut(`${what}: no answer within ${ms} ms`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Options of dialPeer. */
export interface DialPeerOptions {
  network: Network;
  /** The cluster key. */
  key: CryptoKey;
  /** For the dial and the whole exchange (ms). */
  timeoutMs: number;
  /** Stops the dial (shutdown). */
  signal?: AbortSignal;
}

/** What the listener needs to sign its reply: the key and both nonces. */
export interface PeerProof {
  key: CryptoKey;
  dialerNonce: Uint8Array;
  listenerNonce: Uint8Array;
}

/** Reads one message signed as `role`; throws when the signature does not verify. */
async function readSigned(
  conn: Transport,
  proof: PeerProof,
  role: "request" | "reply",
): Promise<Record<string, unknown>> {
  const mac = await readExact(conn, MAC_SIZE);
  const length = messageLength(await readExact(conn, 4));
  const body = await readExact(conn, length);
  if (!await verifyPeer(proof.key, role, proof.dialerNonce, proof.listenerNonce, mac, body)) {
    throw new PeerProtocolError(`the peer's ${role} does not carry a valid signature`);
  }
  return decodeMessage(body);
}

/** One message signed as `role`: the MAC, then the message. */
async function signed(proof: PeerProof, role: "request" | "reply", message: unknown): Promise<Uint8Array> {
  const bytes = encodeMessage(message);
  const mac = await signPeer(proof.key, role, proof.dialerNonce, proof.listenerNonce, bytes.subarray(4));
  const out = new Uint8Array(mac.length + bytes.length);
  out.set(mac);
  out.set(bytes, mac.length);
  return out;
}

/**
 * Dials a peer, proves the cluster key both ways and sends `request`;
 * resolves to the connection (left open, positioned after the reply) and
 * the reply. Throws when the peer cannot be reached, does not prove the key
 * or does not answer in time; the connection is closed then.
 */
export async function dialPeer(
  hostname: string,
  port: number,
  request: PeerRequest,
  options: DialPeerOptions,
): Promise<{ conn: NetConn; reply: Record<string, unknown> }> {
  const conn = await options.network.dial(hostname, port, {
    timeoutMs: options.timeoutMs,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  try {
    const reply = await withDeadline(conn, options.timeoutMs, `peer ${hostname}:${port}`, async () => {
      const ours = randomId();
      await writeAll(conn, encodeDialerOpening(ours));
      const { nonce: theirs, mac } = decodeOpening(await readExact(conn, LISTENER_OPENING_SIZE));
      if (!await verifyPeer(options.key, "listener", ours, theirs, mac)) {
        throw new PeerProtocolError("the peer did not prove the cluster key: is CLUSTER_KEY the same on both?");
      }
      const proof = { key: options.key, dialerNonce: ours, listenerNonce: theirs };
      const opening = await signPeer(options.key, "dialer", ours, theirs);
      const message = await signed(proof, "request", request);
      const out = new Uint8Array(opening.length + message.length);
      out.set(opening);
      out.set(message, opening.length);
      await writeAll(conn, out);
      return await readSigned(conn, proof, "reply");
    });
    return { conn, reply };
  } catch (err) {
    closeQuietly(conn);
    throw err;
  }
}

/**
 * The listener's side: answers the opening, checks the dialer's proof and
 * reads its request, all within `timeoutMs`. Throws (the caller closes the
 * connection) when the dialer does not prove the key.
 */
export async function acceptPeer(
  conn: NetConn,
  key: CryptoKey,
  timeoutMs: number,
): Promise<{ request: PeerRequest; proof: PeerProof }> {
  return await withDeadline(conn, timeoutMs, "peer opening", async () => {
    const { nonce: theirs } = decodeOpening(await readExact(conn, DIALER_OPENING_SIZE));
    const ours = randomId();
    await writeAll(conn, encodeListenerOpening(ours, await signPeer(key, "listener", theirs, ours)));
    const mac = await readExact(conn, MAC_SIZE);
    if (!await verifyPeer(key, "dialer", theirs, ours, mac)) {
      throw new PeerProtocolError("the dialer did not prove the cluster key");
    }
    const proof = { key, dialerNonce: theirs, listenerNonce: ours };
    return { request: parseRequest(await readSigned(conn, proof, "request")), proof };
  });
}

/** Sends the reply to a request read by acceptPeer. */
export async function sendReply(conn: Transport, proof: PeerProof, message: unknown): Promise<void> {
  await writeAll(conn, await signed(proof, "reply", message));
}

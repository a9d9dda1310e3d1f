/**
 * A hand-driven broker-client for tests: speaks the wire format frame by
 * frame, so tests can send exactly the handshakes, proofs and garbage they
 * need and see exactly what the server answers.
 * @module
 */

import {
  decodeWelcome,
  encodeHelloNew,
  encodeHelloResume,
  encodePreface,
  encodeProof,
  type Frame,
  FrameType,
} from "../../src/protocol/frames.ts";
import { createEphemeralKey, deriveResumeKey, randomId, signProof } from "../../src/protocol/resume_auth.ts";
import { Link } from "../../src/session/link.ts";

/** A raw link to a broker-server. */
export class RawPeer {
  /** The framed link. */
  readonly link: Link;
  readonly #conn: Deno.TcpConn;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.link = new Link(conn, "test peer");
  }

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<RawPeer> {
    return new RawPeer(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Writes raw bytes, bypassing the frame writer. */
  async writeRaw(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) done += await this.#conn.write(bytes.subarray(done));
  }

  /** The next frame, or null at end of stream; throws after `ms`. */
  next(ms = 5_000): Promise<Frame | null> {
    return this.link.readFrameWithin(ms, "frame");
  }

  /** Resolves when the server has closed the link (EOF or reset), skipping frames. */
  async closedByPeer(ms = 5_000): Promise<void> {
    try {
      while (await this.next(ms) !== null) { /* skip */ }
    } catch (err) {
      if (err instanceof Deno.errors.TimedOut) throw err;
    }
  }

  /** Closes the link. */
  close(): void {
    this.link.close();
  }
}

/** What a raw client knows of a session it opened. */
export interface RawSession {
  /** The live link. */
  peer: RawPeer;
  /** Session id. */
  sessionId: Uint8Array;
  /** Resume key. */
  key: CryptoKey;
}

/**
 * Opens a session the way broker-client does; a client retrying an opening
 * whose WELCOME it never got sends the same `openToken` again.
 */
export async function openRawSession(port: number, openToken = randomId()): Promise<RawSession> {
  const peer = await RawPeer.connect(port);
  const own = await createEphemeralKey();
  peer.link.send(encodePreface());
  peer.link.send(encodeHelloNew(own.publicKey, openToken));
  const preface = await peer.next();
  if (preface?.type !== FrameType.Preface) throw new Error("expected the server's preface");
  const welcomeFrame = await peer.next();
  if (welcomeFrame?.type !== FrameType.Welcome) throw new Error(`expected WELCOME, got ${welcomeFrame?.type}`);
  const welcome = decodeWelcome(welcomeFrame.payload);
  const key = await deriveResumeKey(own, welcome.publicKey, welcome.sessionId, own.publicKey, welcome.publicKey);
  return { peer, sessionId: welcome.sessionId, key };
}

/**
 * Tries to resume `sessionId` claiming `received`; signs with `key`, or
 * sends garbage as the proof when `key` is null. Returns the peer and the
 * server's answer (RESUMED or REJECT).
 */
export async function resumeRaw(
  port: number,
  sessionId: Uint8Array,
  key: CryptoKey | null,
  received: number,
): Promise<{ peer: RawPeer; answer: Frame | null }> {
  const peer = await RawPeer.connect(port);
  const clientNonce = randomId();
  peer.link.send(encodePreface());
  peer.link.send(encodeHelloResume(sessionId, clientNonce));
  await peer.next(); // preface
  const challenge = await peer.next();
  if (challenge?.type !== FrameType.Challenge) return { peer, answer: challenge };
  const input = { sessionId, clientNonce, serverNonce: challenge.payload.slice(), receivedOffset: received };
  const mac = key ? await signProof(key, "client", input) : crypto.getRandomValues(new Uint8Array(32));
  peer.link.send(encodeProof(FrameType.Proof, mac, received));
  return { peer, answer: await peer.next() };
}

/**
 * A hand-driven broker-client for tests: speaks the wire format frame by
 * frame, so tests can send exactly the handshakes, proofs and garbage they
 * need and see exactly what the server answers.
 * @module
 */

import {
  decodeProof,
  decodeWelcome,
  decodeWelcomeBack,
  encodeHelloNew,
  encodeHelloResume,
  encodePreface,
  encodeProof,
  type Frame,
  FrameType,
} from "../../src/protocol/frames.ts";
import {
  createEphemeralKey,
  deriveResumeKey,
  type EphemeralKey,
  randomId,
  signProof,
  signRetake,
  verifyRetake,
} from "../../src/protocol/resume_auth.ts";
import { Link } from "../../src/session/link.ts";
import { MAX_REPLAY_BUFFER_BYTES } from "../../src/config/tuning.ts";

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
  /** The ephemeral key pair the opening used (a retry of the same opening uses it again). */
  own: EphemeralKey;
}

/** Options of openRawSession. */
export interface OpenRawOptions {
  /** The open token; a client retrying an opening whose WELCOME it never got sends the same one again. */
  openToken?: Uint8Array;
  /** The ephemeral key pair; a retry of the same opening uses the first attempt's. */
  own?: EphemeralKey;
  /** The cap offered in HELLO_NEW (default: the largest, so the server's cap is the session's). */
  replayBufferBytes?: number;
}

/**
 * Opens a session the way broker-client does. When the server answers with
 * WELCOME_BACK (the opening was retried), proves the resume key the first
 * attempt derived and waits for the server's RESUMED.
 */
export async function openRawSession(port: number, options: OpenRawOptions = {}): Promise<RawSession> {
  const openToken = options.openToken ?? randomId();
  const own = options.own ?? await createEphemeralKey();
  const peer = await RawPeer.connect(port);
  peer.link.send(encodePreface());
  peer.link.send(encodeHelloNew(own.publicKey, openToken, options.replayBufferBytes ?? MAX_REPLAY_BUFFER_BYTES));
  const preface = await peer.next();
  if (preface?.type !== FrameType.Preface) throw new Error("expected the server's preface");
  const frame = await peer.next();
  if (frame?.type !== FrameType.Welcome && frame?.type !== FrameType.WelcomeBack) {
    throw new Error(`expected WELCOME, got ${frame?.type}`);
  }
  const back = frame.type === FrameType.WelcomeBack ? decodeWelcomeBack(frame.payload) : null;
  const welcome = back ? back.welcome : decodeWelcome(frame.payload);
  const key = await deriveResumeKey(own, welcome.publicKey, welcome.sessionId, own.publicKey, welcome.publicKey);
  if (back) {
    const input = { sessionId: welcome.sessionId, openToken, serverNonce: back.serverNonce };
    peer.link.send(encodeProof(FrameType.Proof, await signRetake(key, "client", input), 0));
    const answer = await peer.next();
    if (answer?.type !== FrameType.Resumed) throw new Error(`expected RESUMED, got ${answer?.type}`);
    if (!await verifyRetake(key, "server", input, decodeProof(answer.payload).mac)) {
      throw new Error("the server's RESUMED does not prove the session's key");
    }
  }
  return { peer, sessionId: welcome.sessionId, key, own };
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

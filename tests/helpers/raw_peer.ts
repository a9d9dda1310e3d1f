/**
 * A hand-driven broker-client for tests: speaks the wire format frame by
 * frame, so tests can send exactly the handshakes, proofs and garbage they
 * need and see exactly what the server answers.
 * @module
 */

import { encodePreface, type Frame } from "../../src/protocol/frames.ts";
import { createEphemeralKey, type EphemeralKey, randomId } from "../../src/protocol/resume_auth.ts";
import { Link } from "../../src/session/link.ts";
import { MAX_REPLAY_BUFFER_BYTES } from "../../src/config/tuning.ts";
import { type DialBroker, openHandshake, sendResumeProof } from "../../src/client/handshake.ts";

/** How long a raw handshake may take (ms). */
const RAW_HANDSHAKE_MS = 5_000;

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

/** A dial function for the shared handshake that connects a RawPeer and keeps it in `peers`. */
function rawDial(port: number, peers: RawPeer[]): DialBroker {
  return async (hello) => {
    const peer = await RawPeer.connect(port);
    peers.push(peer);
    peer.link.send(encodePreface());
    peer.link.send(hello);
    return peer.link;
  };
}

/**
 * Opens a session the way broker-client does (its handshake, without an
 * admission key or checks of the server's timers). When the server answers
 * with WELCOME_BACK (the opening was retried), proves the resume key the
 * first attempt derived and checks the server's proof.
 */
export async function openRawSession(port: number, options: OpenRawOptions = {}): Promise<RawSession> {
  const openToken = options.openToken ?? randomId();
  const own = options.own ?? await createEphemeralKey();
  const peers: RawPeer[] = [];
  const { welcome, key } = await openHandshake({
    dial: rawDial(port, peers),
    own,
    openToken,
    replayBufferBytes: options.replayBufferBytes ?? MAX_REPLAY_BUFFER_BYTES,
    admissionKey: null,
    handshakeTimeoutMs: RAW_HANDSHAKE_MS,
  });
  return { peer: peers[0]!, sessionId: welcome.sessionId, key, own };
}

/**
 * Tries to resume `sessionId` claiming `received`; signs with `key`, or
 * sends garbage as the proof when `key` is null. Returns the peer and the
 * server's answer (RESUMED or REJECT) as it came, unverified.
 */
export async function resumeRaw(
  port: number,
  sessionId: Uint8Array,
  key: CryptoKey | null,
  received: number,
): Promise<{ peer: RawPeer; answer: Frame | null }> {
  const peers: RawPeer[] = [];
  const { answer } = await sendResumeProof({
    dial: rawDial(port, peers),
    sessionId,
    key,
    received,
    handshakeTimeoutMs: RAW_HANDSHAKE_MS,
  });
  return { peer: peers[0]!, answer };
}

/**
 * The link wire format, in one place and without I/O.
 *
 * A link starts with a 5-byte preface from each side: the magic "PBRK" and
 * the protocol version. Frames follow: `type:u8 length:u32be payload`.
 * Offsets are unsigned 64-bit big-endian on the wire; inside the program they
 * are JavaScript numbers, exact up to 2^53 bytes (8 PiB) per direction, and a
 * larger value on the wire is rejected as malformed.
 *
 * Handshakes (client → server, ← server's answers):
 * - open: HELLO_NEW → [← CHALLENGE, PROOF: with an admission key] ← WELCOME.
 *   HELLO_NEW states the client's replay buffer cap, WELCOME the session's:
 *   the smaller of both sides', the most either side keeps in flight.
 * - retried open, when an earlier attempt with the same token and key already
 *   opened the session: HELLO_NEW → [admission as above] ← WELCOME_BACK →
 *   PROOF ← RESUMED; the link carries the session only after the proof.
 * - resume: HELLO_RESUME ← CHALLENGE → PROOF ← RESUMED.
 * Any step may be answered by REJECT instead.
 * @module
 */

import { PEER_TEXT_MAX_CHARS, peerText } from "../ops/peer_text.ts";

/** The four magic bytes that open every link: "PBRK". */
export const MAGIC = new Uint8Array([0x50, 0x42, 0x52, 0x4b]);
/** Version of this wire format; both ends must speak the same. */
export const PROTOCOL_VERSION = 2;
/** Size of the preface: magic and version. */
export const PREFACE_SIZE = 5;
/** Size of a frame header: type and payload length. */
export const FRAME_HEADER_SIZE = 5;
/** Size of a DATA frame's header: frame header plus the 64-bit offset. */
export const DATA_HEADER_SIZE = FRAME_HEADER_SIZE + 8;
/** Default largest payload accepted in one frame. */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Size of session ids and nonces. */
export const ID_SIZE = 16;
/** Size of an X25519 public key. */
export const PUBLIC_KEY_SIZE = 32;
/** Size of an HMAC-SHA-256 proof. */
export const MAC_SIZE = 32;

/** Every frame type of the protocol. */
export const FrameType = {
  /** Pseudo-frame produced by the decoder for the peer's preface. */
  Preface: 0,
  /** Client: open a new session; payload is the client's ECDH public key and its open token. */
  HelloNew: 1,
  /** Client: resume a session; payload is the session id and a client nonce. */
  HelloResume: 2,
  /** Server: new session accepted; id, server public key, timers. */
  Welcome: 3,
  /** Server: resume challenge; payload is a server nonce. */
  Challenge: 4,
  /** Client: resume proof and the offset the client has received. */
  Proof: 5,
  /** Server: resume (or retaken opening) accepted; server proof and the offset the server has received. */
  Resumed: 6,
  /**
   * Server: this opening was retried and an earlier attempt already opened
   * the session; payload is a fresh server nonce, then the original WELCOME
   * payload. The client answers PROOF (see resume_auth's signRetake); only
   * then does the link carry the session, confirmed by RESUMED.
   */
  WelcomeBack: 7,
  /** Application bytes at an offset. */
  Data: 16,
  /**
   * Cumulative acknowledgement: every byte below the offset was received.
   * The server also sends ACK 0 (which acknowledges nothing) when it
   * attaches a link and in answer to each HEARTBEAT.
   */
  Ack: 17,
  /**
   * Liveness beacon; carries a cumulative acknowledgement too. The server
   * answers the client's at once with ACK 0: the client times its link with
   * it and suspects a link whose answer is late (src/session/liveness.ts).
   */
  Heartbeat: 18,
  /** The sender's application closed its side; payload is the stream length. */
  Fin: 19,
  /**
   * The session is over; no payload. From the server: both streams are
   * finished and acknowledged. From either side: the answer to the peer's
   * ABORT (the client says its ABORT again on a new link until it gets it).
   */
  Close: 20,
  /** The session ends abnormally; payload is the reason (UTF-8). Answered with CLOSE. */
  Abort: 32,
  /** A handshake is refused; payload is a code and the reason (UTF-8). */
  Reject: 33,
  /** Server: shutting down; sessions may go on for the drain period (u32 ms), then end. Payload: ms and reason. */
  GoAway: 34,
} as const;

/** A frame type value. */
export type FrameTypeValue = typeof FrameType[keyof typeof FrameType];

/** Why a handshake was refused. */
export const RejectCode = {
  /** Peer speaks another protocol version. */
  Version: 1,
  /** The session is not known (expired, or the server restarted). */
  UnknownSession: 2,
  /** The resume proof did not verify. */
  BadProof: 3,
  /** The bytes the peer needs are no longer buffered. */
  CannotResume: 4,
  /** No ERP server accepted the connection. */
  NoBackend: 5,
  /** The session has already ended; the reason says how. */
  SessionEnded: 6,
  /** The handshake was malformed or out of order. */
  Protocol: 7,
  /** The server is shutting down, over a limit, or still opening this session for an earlier attempt. */
  Unavailable: 8,
} as const;

/** A reject code value. */
export type RejectCodeValue = typeof RejectCode[keyof typeof RejectCode];

/** A decoded frame; `payload` is a view into the bytes received. */
export interface Frame {
  /** The frame type. */
  type: FrameTypeValue;
  /** The payload (for Preface: one byte, the peer's version). */
  payload: Uint8Array;
}

/** A malformed frame or preface: the link that carried it must be dropped. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

/** Size of a HELLO_NEW payload: public key, open token and the client's u32 cap. */
const HELLO_NEW_SIZE = PUBLIC_KEY_SIZE + ID_SIZE + 4;

/** Size of a WELCOME payload without the optional admission proof: id, key, three u32 timers and the u32 cap. */
const WELCOME_SIZE = ID_SIZE + PUBLIC_KEY_SIZE + 16;

/** Payload size per frame type: exact, or the minimum when `exact` is false. */
const PAYLOAD_SIZES: Record<number, [min: number, exact: boolean]> = {
  [FrameType.HelloNew]: [HELLO_NEW_SIZE, true],
  [FrameType.HelloResume]: [ID_SIZE * 2, true],
  [FrameType.Welcome]: [WELCOME_SIZE, false],
  [FrameType.Challenge]: [ID_SIZE, true],
  [FrameType.Proof]: [MAC_SIZE + 8, true],
  [FrameType.Resumed]: [MAC_SIZE + 8, true],
  [FrameType.WelcomeBack]: [ID_SIZE + WELCOME_SIZE, false],
  [FrameType.Data]: [9, false],
  [FrameType.Ack]: [8, true],
  [FrameType.Heartbeat]: [8, true],
  [FrameType.Fin]: [8, true],
  [FrameType.Close]: [0, true],
  [FrameType.Abort]: [0, false],
  [FrameType.Reject]: [1, false],
  [FrameType.GoAway]: [4, false],
};

/** The preface this side sends. */
export function encodePreface(version: number = PROTOCOL_VERSION): Uint8Array {
  const out = new Uint8Array(PREFACE_SIZE);
  out.set(MAGIC);
  out[4] = version;
  return out;
}

/** Reads a u32 big-endian (byte arithmetic: no DataView per call on the hot path). */
export function readU32(bytes: Uint8Array, at: number): number {
  return ((bytes[at] as number) * 0x100_0000) +
    (((bytes[at + 1] as number) << 16) | ((bytes[at + 2] as number) << 8) | (bytes[at + 3] as number));
}

/** Writes a u32 field, refusing what 32 bits cannot hold (instead of wrapping around). */
function writeU32Field(bytes: Uint8Array, at: number, value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new RangeError(`Cannot encode ${what} ${value}: expected an integer in 0..2^32-1`);
  }
  writeU32(bytes, at, value);
}

/** Writes a u32 big-endian. */
function writeU32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = value >>> 16;
  bytes[at + 2] = value >>> 8;
  bytes[at + 3] = value;
}

/** Writes an unsigned offset as u64 big-endian. */
export function writeU64(bytes: Uint8Array, at: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`Cannot encode offset ${value}: expected an integer in 0..2^53-1`);
  }
  writeU32(bytes, at, Math.floor(value / 0x1_0000_0000));
  writeU32(bytes, at + 4, value >>> 0);
}

/** Reads a u64 big-endian offset, rejecting values beyond 2^53-1. */
export function readU64(bytes: Uint8Array, at: number): number {
  const high = readU32(bytes, at);
  if (high > 0x1f_ffff) throw new ProtocolError(`Offset too large: high word ${high} exceeds 2^53`);
  return high * 0x1_0000_0000 + readU32(bytes, at + 4);
}

/** A frame of `type` with room for `payloadSize` bytes after its header. */
function frame(type: FrameTypeValue, payloadSize: number): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_SIZE + payloadSize);
  out[0] = type;
  writeU32(out, 1, payloadSize);
  return out;
}

function frameWithBytes(type: FrameTypeValue, ...parts: Uint8Array[]): Uint8Array {
  const body = concatBytes(...parts);
  const out = frame(type, body.length);
  out.set(body, FRAME_HEADER_SIZE);
  return out;
}

function checkSize(what: string, bytes: Uint8Array, size: number): void {
  if (bytes.length !== size) {
    throw new RangeError(`Cannot encode ${what}: expected ${size} bytes, got ${bytes.length}`);
  }
}

/**
 * HELLO_NEW: the client's ephemeral public key, its open token (a random
 * value the client repeats, with the same key, on every attempt to open the
 * same session: a repeat tells the server that an earlier WELCOME may never
 * have arrived; both travel in clear, so a repeat proves nothing by itself:
 * while the earlier attempt still connects to an ERP server the server
 * refuses the repeat as Unavailable, and once it opened a session not yet
 * confirmed the server answers WELCOME_BACK and requires a proof), and the
 * client's replay buffer cap: the session's cap, which WELCOME states, is
 * the smaller of the two sides', so that each side acknowledges in time for
 * the other's window.
 */
export function encodeHelloNew(publicKey: Uint8Array, openToken: Uint8Array, replayBufferBytes: number): Uint8Array {
  checkSize("public key", publicKey, PUBLIC_KEY_SIZE);
  checkSize("open token", openToken, ID_SIZE);
  const out = frame(FrameType.HelloNew, HELLO_NEW_SIZE);
  out.set(publicKey, FRAME_HEADER_SIZE);
  out.set(openToken, FRAME_HEADER_SIZE + PUBLIC_KEY_SIZE);
  writeU32Field(out, FRAME_HEADER_SIZE + PUBLIC_KEY_SIZE + ID_SIZE, replayBufferBytes, "replayBufferBytes");
  return out;
}

/** A decoded HELLO_NEW. */
export interface HelloNew {
  /** The client's ephemeral public key. */
  publicKey: Uint8Array;
  /** The open token. */
  openToken: Uint8Array;
  /** The client's replay buffer cap (bytes). */
  replayBufferBytes: number;
}

/** Decodes a HELLO_NEW payload (its size is checked by the decoder). */
export function decodeHelloNew(payload: Uint8Array): HelloNew {
  return {
    publicKey: payload.slice(0, PUBLIC_KEY_SIZE),
    openToken: payload.slice(PUBLIC_KEY_SIZE, PUBLIC_KEY_SIZE + ID_SIZE),
    replayBufferBytes: readU32(payload, PUBLIC_KEY_SIZE + ID_SIZE),
  };
}

/** HELLO_RESUME: session id and a fresh client nonce. */
export function encodeHelloResume(sessionId: Uint8Array, clientNonce: Uint8Array): Uint8Array {
  checkSize("session id", sessionId, ID_SIZE);
  checkSize("client nonce", clientNonce, ID_SIZE);
  return frameWithBytes(FrameType.HelloResume, sessionId, clientNonce);
}

/** Session parameters the server dictates in WELCOME. */
export interface WelcomeTimers {
  /** Resume window (ms). */
  resumeTimeoutMs: number;
  /** Heartbeat interval (ms). */
  heartbeatIntervalMs: number;
  /** Silent-link limit (ms). */
  linkTimeoutMs: number;
  /** The server's replay buffer cap: the most it keeps unacknowledged, and the most the client may (bytes). */
  replayBufferBytes: number;
}

/** WELCOME: session id, server public key, the server's timers and cap. */
export function encodeWelcome(
  sessionId: Uint8Array,
  publicKey: Uint8Array,
  timers: WelcomeTimers,
  admissionMac: Uint8Array | null = null,
): Uint8Array {
  checkSize("session id", sessionId, ID_SIZE);
  checkSize("public key", publicKey, PUBLIC_KEY_SIZE);
  if (admissionMac) checkSize("admission proof", admissionMac, MAC_SIZE);
  const out = frame(FrameType.Welcome, WELCOME_SIZE + (admissionMac ? MAC_SIZE : 0));
  if (admissionMac) out.set(admissionMac, FRAME_HEADER_SIZE + WELCOME_SIZE);
  out.set(sessionId, FRAME_HEADER_SIZE);
  out.set(publicKey, FRAME_HEADER_SIZE + ID_SIZE);
  const at = FRAME_HEADER_SIZE + ID_SIZE + PUBLIC_KEY_SIZE;
  writeU32Field(out, at, timers.resumeTimeoutMs, "resumeTimeoutMs");
  writeU32Field(out, at + 4, timers.heartbeatIntervalMs, "heartbeatIntervalMs");
  writeU32Field(out, at + 8, timers.linkTimeoutMs, "linkTimeoutMs");
  writeU32Field(out, at + 12, timers.replayBufferBytes, "replayBufferBytes");
  return out;
}

/** A decoded WELCOME. */
export interface Welcome extends WelcomeTimers {
  /** The new session's id. */
  sessionId: Uint8Array;
  /** The server's ephemeral public key. */
  publicKey: Uint8Array;
  /** The server's admission proof, when an admission key is in use. */
  admissionMac: Uint8Array | null;
}

/** Decodes a WELCOME payload. */
export function decodeWelcome(payload: Uint8Array): Welcome {
  if (payload.length !== WELCOME_SIZE && payload.length !== WELCOME_SIZE + MAC_SIZE) {
    throw new ProtocolError(
      `Malformed WELCOME: ${payload.length} bytes, expected ${WELCOME_SIZE} or ${WELCOME_SIZE + MAC_SIZE}`,
    );
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.length);
  const at = ID_SIZE + PUBLIC_KEY_SIZE;
  return {
    sessionId: payload.slice(0, ID_SIZE),
    publicKey: payload.slice(ID_SIZE, at),
    resumeTimeoutMs: view.getUint32(at),
    heartbeatIntervalMs: view.getUint32(at + 4),
    linkTimeoutMs: view.getUint32(at + 8),
    replayBufferBytes: view.getUint32(at + 12),
    admissionMac: payload.length > WELCOME_SIZE ? payload.slice(WELCOME_SIZE) : null,
  };
}

/** WELCOME_BACK: a fresh server nonce and the WELCOME `welcome` (a whole frame) of the session's first attempt. */
export function encodeWelcomeBack(serverNonce: Uint8Array, welcome: Uint8Array): Uint8Array {
  checkSize("server nonce", serverNonce, ID_SIZE);
  if (welcome[0] !== FrameType.Welcome) {
    throw new RangeError(`Cannot encode WELCOME_BACK around frame type ${welcome[0]}`);
  }
  return frameWithBytes(FrameType.WelcomeBack, serverNonce, welcome.subarray(FRAME_HEADER_SIZE));
}

/** A decoded WELCOME_BACK. */
export interface WelcomeBack {
  /** The server's nonce for the retake proof. */
  serverNonce: Uint8Array;
  /** The WELCOME payload, as sent (an admission proof covers it without its own proof). */
  welcomePayload: Uint8Array;
  /** The WELCOME, decoded. */
  welcome: Welcome;
}

/** Decodes a WELCOME_BACK payload. */
export function decodeWelcomeBack(payload: Uint8Array): WelcomeBack {
  const welcomePayload = payload.subarray(ID_SIZE);
  return { serverNonce: payload.slice(0, ID_SIZE), welcomePayload, welcome: decodeWelcome(welcomePayload) };
}

/** CHALLENGE: a fresh server nonce. */
export function encodeChallenge(serverNonce: Uint8Array): Uint8Array {
  checkSize("server nonce", serverNonce, ID_SIZE);
  return frameWithBytes(FrameType.Challenge, serverNonce);
}

/** PROOF or RESUMED: an HMAC and the sender's received offset. */
export function encodeProof(
  type: typeof FrameType.Proof | typeof FrameType.Resumed,
  mac: Uint8Array,
  receivedOffset: number,
): Uint8Array {
  checkSize("proof", mac, MAC_SIZE);
  const out = frame(type, MAC_SIZE + 8);
  out.set(mac, FRAME_HEADER_SIZE);
  writeU64(out, FRAME_HEADER_SIZE + MAC_SIZE, receivedOffset);
  return out;
}

/** A decoded PROOF or RESUMED. */
export interface Proof {
  /** The HMAC. */
  mac: Uint8Array;
  /** The sender's received offset. */
  receivedOffset: number;
}

/** Decodes a PROOF or RESUMED payload. */
export function decodeProof(payload: Uint8Array): Proof {
  return { mac: payload.slice(0, MAC_SIZE), receivedOffset: readU64(payload, MAC_SIZE) };
}

/** ACK, HEARTBEAT or FIN: a frame whose payload is one offset. */
export function encodeOffsetFrame(
  type: typeof FrameType.Ack | typeof FrameType.Heartbeat | typeof FrameType.Fin,
  offset: number,
): Uint8Array {
  const out = frame(type, 8);
  writeU64(out, FRAME_HEADER_SIZE, offset);
  return out;
}

/**
 * Fills in the header of a DATA frame whose bytes were read in place at
 * `frame[DATA_HEADER_SIZE..]`, so the buffer read into is the one sent and
 * kept: no copy on the hot path.
 */
export function sealDataFrame(frame: Uint8Array, offset: number): Uint8Array {
  if (frame.length <= DATA_HEADER_SIZE) {
    throw new RangeError(`Cannot seal a DATA frame of ${frame.length} bytes: it carries no data`);
  }
  frame[0] = FrameType.Data;
  writeU32(frame, 1, frame.length - FRAME_HEADER_SIZE);
  writeU64(frame, FRAME_HEADER_SIZE, offset);
  return frame;
}

/**
 * The header of a DATA frame of `length` bytes at `offset`: sent right
 * before the bytes themselves, so that a retransmission sends the kept bytes
 * without copying them.
 */
export function encodeDataHeader(offset: number, length: number): Uint8Array {
  if (length <= 0) throw new RangeError(`Cannot encode a DATA header for ${length} bytes: it carries no data`);
  const out = new Uint8Array(DATA_HEADER_SIZE);
  out[0] = FrameType.Data;
  writeU32(out, 1, 8 + length);
  writeU64(out, FRAME_HEADER_SIZE, offset);
  return out;
}

/** DATA with a copy of `bytes` (tests and tools; the brokers use sealDataFrame and encodeDataHeader). */
export function encodeData(offset: number, bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(DATA_HEADER_SIZE + bytes.length);
  out.set(bytes, DATA_HEADER_SIZE);
  return sealDataFrame(out, offset);
}

/** CLOSE: the server's goodbye once the session finished cleanly, or either side's answer to an ABORT. */
export function encodeClose(): Uint8Array {
  return frame(FrameType.Close, 0);
}

/** ABORT with a reason. */
export function encodeAbort(reason: string): Uint8Array {
  return frameWithBytes(FrameType.Abort, new TextEncoder().encode(reason.slice(0, 1000)));
}

/** REJECT with a code and a reason. */
export function encodeReject(code: RejectCodeValue, reason: string): Uint8Array {
  return frameWithBytes(
    FrameType.Reject,
    new Uint8Array([code]),
    new TextEncoder().encode(reason.slice(0, 1000)),
  );
}

/** GOAWAY: the server stops; live sessions have `drainMs` to finish. */
export function encodeGoAway(drainMs: number, reason: string): Uint8Array {
  const text = new TextEncoder().encode(reason.slice(0, 1000));
  const out = frame(FrameType.GoAway, 4 + text.length);
  writeU32Field(out, FRAME_HEADER_SIZE, drainMs, "drain time");
  out.set(text, FRAME_HEADER_SIZE + 4);
  return out;
}

/** Decodes a GOAWAY payload. */
export function decodeGoAway(payload: Uint8Array): { drainMs: number; reason: string } {
  return {
    drainMs: new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0),
    reason: decodeText(payload.subarray(4), SERVER_REASON_MAX_CHARS),
  };
}

/** Decodes a REJECT payload. */
export function decodeReject(payload: Uint8Array): { code: number; reason: string } {
  return { code: payload[0] ?? 0, reason: decodeText(payload.subarray(1), SERVER_REASON_MAX_CHARS) };
}

/**
 * Most characters of a REJECT or GOAWAY reason kept: what broker-server
 * sends at most (a refusal names every ERP server tried, and why).
 */
const SERVER_REASON_MAX_CHARS = 1000;

/**
 * Decodes the UTF-8 reason text of an ABORT, REJECT or GOAWAY leniently, as
 * text safe to log: the peer decides what it says, so control characters are
 * escaped and it is cut to `maxChars` (see peerText), whatever length it came
 * with. ABORT reasons, which either side sends, keep PEER_TEXT_MAX_CHARS.
 */
export function decodeText(payload: Uint8Array, maxChars: number = PEER_TEXT_MAX_CHARS): string {
  return peerText(new TextDecoder().decode(payload), { maxChars });
}

const EMPTY = new Uint8Array(0);

/** Which frames a decoder accepts. */
export interface FrameLimits {
  /** Largest payload accepted (default 1 MiB). */
  maxPayload?: number;
  /** The frame types accepted (default: every type); another type is a ProtocolError. */
  types?: readonly FrameTypeValue[];
}

/**
 * What broker-server accepts from a broker-client before the handshake is
 * done: its hellos and proofs, all small and of fixed size, so an unproven
 * link cannot announce a large frame and make the server buffer for it.
 */
export const CLIENT_HANDSHAKE_LIMITS: Readonly<FrameLimits> = Object.freeze({
  maxPayload: HELLO_NEW_SIZE,
  types: Object.freeze([FrameType.HelloNew, FrameType.HelloResume, FrameType.Proof]),
});

/** Options of a FrameDecoder. */
export interface FrameDecoderOptions extends FrameLimits {
  /** Expect the peer's 5-byte preface first (default true). */
  preface?: boolean;
  /**
   * The caller carries incomplete frames itself (default false): next()
   * leaves them pending as views into the last chunk pushed, and the caller
   * takes them with takePending() and pushes them again, completed, in one
   * chunk. A link does this to read the rest of a frame right behind its
   * beginning instead of having the decoder assemble a copy.
   */
  carry?: boolean;
}

/**
 * Streaming frame decoder: push bytes as they arrive (split anywhere), pull
 * complete frames. Complete frames inside a pushed chunk are returned as
 * views without copying; only a frame split across chunks is assembled.
 */
export class FrameDecoder {
  #maxPayload: number;
  #types: readonly number[] | null;
  #needPreface: boolean;
  #carry: boolean;
  #pending: Uint8Array = EMPTY;
  #partial: Uint8Array | null = null;
  #partialFilled = 0;

  /** Creates a decoder. */
  constructor(options: FrameDecoderOptions = {}) {
    this.#maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.#types = options.types ?? null;
    this.#needPreface = options.preface ?? true;
    this.#carry = options.carry ?? false;
  }

  /** Replaces the limits (omitted ones take their defaults); frames not yet returned by next() are judged by these. */
  setLimits(limits: FrameLimits): void {
    this.#maxPayload = limits.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.#types = limits.types ?? null;
  }

  /** Bytes held that do not yet form a frame. */
  get bufferedBytes(): number {
    return this.#pending.length + this.#partialFilled;
  }

  /**
   * Size of the frame (or preface) the pending bytes begin, header included,
   * or 0 while its length is not known yet. Valid after next() returned null.
   */
  get pendingFrameSize(): number {
    if (this.#needPreface) return PREFACE_SIZE;
    const bytes = this.#pending;
    if (bytes.length < FRAME_HEADER_SIZE) return 0;
    return FRAME_HEADER_SIZE + readU32(bytes, 1);
  }

  /** Carry mode: hands over the pending (incomplete) bytes and forgets them. */
  takePending(): Uint8Array {
    const bytes = this.#pending;
    this.#pending = EMPTY;
    return bytes;
  }

  /** Adds received bytes. The decoder keeps views of `chunk`: do not reuse it until its frames are consumed. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.#partial) {
      const take = Math.min(chunk.length, this.#partial.length - this.#partialFilled);
      this.#partial.set(chunk.subarray(0, take), this.#partialFilled);
      this.#partialFilled += take;
      chunk = chunk.subarray(take);
      if (chunk.length === 0) return;
    }
    if (this.#pending.length === 0) {
      this.#pending = chunk;
    } else {
      const joined = new Uint8Array(this.#pending.length + chunk.length);
      joined.set(this.#pending);
      joined.set(chunk, this.#pending.length);
      this.#pending = joined;
    }
  }

  /** The next complete frame, or null until more bytes arrive. Throws ProtocolError on malformed input. */
  next(): Frame | null {
    if (this.#partial) {
      if (this.#partialFilled < this.#partial.length) return null;
      const done = this.#partial;
      this.#partial = null;
      this.#partialFilled = 0;
      // The assembled frame may be followed by bytes already pending.
      return { type: done[0] as FrameTypeValue, payload: done.subarray(FRAME_HEADER_SIZE) };
    }
    const bytes = this.#pending;
    if (this.#needPreface) {
      // Judge the magic as soon as its bytes arrive, so a stranger is told off at once.
      for (let i = 0; i < Math.min(bytes.length, MAGIC.length); i++) {
        if (bytes[i] !== MAGIC[i]) {
          throw new ProtocolError(
            `Not a broker peer: expected the preface "PBRK", got bytes 0x${toHex(bytes.subarray(0, PREFACE_SIZE))}`,
          );
        }
      }
      if (bytes.length < PREFACE_SIZE) return this.#keepRest();
      this.#needPreface = false;
      this.#pending = bytes.subarray(PREFACE_SIZE);
      return { type: FrameType.Preface, payload: bytes.subarray(4, PREFACE_SIZE) };
    }
    if (bytes.length < FRAME_HEADER_SIZE) return this.#keepRest();
    const type = bytes[0] as number;
    const length = readU32(bytes, 1);
    this.#validate(type, length);
    const total = FRAME_HEADER_SIZE + length;
    if (bytes.length >= total) {
      this.#pending = bytes.subarray(total);
      return { type: type as FrameTypeValue, payload: bytes.subarray(FRAME_HEADER_SIZE, total) };
    }
    if (this.#carry) return null;
    // Split frame: assemble it in a buffer of its exact size, copying each byte once.
    this.#partial = new Uint8Array(total);
    this.#partial.set(bytes);
    this.#partialFilled = bytes.length;
    this.#pending = EMPTY;
    return null;
  }

  /**
   * Copies a short unconsumed tail out of the caller's chunk, so the caller
   * may reuse its read buffer once next() has returned null.
   */
  #keepRest(): null {
    if (this.#pending.length > 0 && !this.#carry) this.#pending = this.#pending.slice();
    return null;
  }

  #validate(type: number, length: number): void {
    const rule = PAYLOAD_SIZES[type];
    if (!rule) throw new ProtocolError(`Unknown frame type ${type}`);
    if (this.#types && !this.#types.includes(type)) {
      throw new ProtocolError(`Unexpected frame type ${type}: only types ${this.#types.join(", ")} are accepted now`);
    }
    if (length > this.#maxPayload + 8) {
      throw new ProtocolError(`Frame too large: type ${type} with ${length} bytes, limit ${this.#maxPayload}`);
    }
    const [min, exact] = rule;
    if (exact ? length !== min : length < min) {
      throw new ProtocolError(
        `Malformed frame: type ${type} with a ${length}-byte payload, expected ${exact ? "" : "at least "}${min}`,
      );
    }
  }
}

/** The parts one after the other, in a new buffer. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Lower-case hex of bytes (session ids in logs). */
export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

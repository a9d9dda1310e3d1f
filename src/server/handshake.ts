/**
 * broker-server's side of the link handshake on the wire: the preface, the
 * hello, and the proofs that answer a challenge. Each step hands back a
 * typed result; none looks at the session registry (the server decides
 * what a hello is allowed to get).
 * @module
 */

import { MAX_REPLAY_BUFFER_BYTES, MIN_REPLAY_BUFFER_BYTES } from "../config/tuning.ts";
import {
  decodeHelloNew,
  decodeProof,
  encodeChallenge,
  encodeClose,
  encodeOffsetFrame,
  encodePreface,
  encodeProof,
  encodeWelcome,
  type Frame,
  FRAME_HEADER_SIZE,
  FrameType,
  ID_SIZE,
  PROTOCOL_VERSION,
  RejectCode,
  type RejectCodeValue,
} from "../protocol/frames.ts";
import { signAdmission, signProof, verifyAdmission, verifyProof, verifyRetake } from "../protocol/resume_auth.ts";
import type { SessionTimers } from "../session/session.ts";

/** The link as the handshake uses it. */
export interface HandshakeLink {
  /** Queues a frame. */
  send(frame: Uint8Array): void;
  /** The next frame within `ms`, or null when the link closed. */
  readFrameWithin(ms: number, what: string): Promise<Frame | null>;
}

/** Reads the next frame by a deadline; null when the link closed. */
export type ReadFrame = (what: string) => Promise<Frame | null>;

/** A hello that asks for a new session. */
export interface OpenRequest {
  kind: "open";
  /** The client's X25519 public key. */
  clientPublicKey: Uint8Array;
  /** The client's open token (the same on every retry of one opening). */
  openToken: Uint8Array;
  /** The client's replay buffer cap (bytes). */
  clientCap: number;
}

/** A hello that asks to resume a session. */
export interface ResumeRequest {
  kind: "resume";
  /** The session id's bytes. */
  sessionId: Uint8Array;
  /** The client's nonce. */
  clientNonce: Uint8Array;
}

/** A link to refuse with `code` and `reason`. */
export interface Refusal {
  kind: "refused";
  /** The REJECT code. */
  code: RejectCodeValue;
  /** Why, for the log and the client. */
  reason: string;
}

/** What a link's hello asks for; null when the link closed first. */
export type HelloResult = OpenRequest | ResumeRequest | Refusal | null;

/** Options of readHello. */
export interface ReadHelloOptions {
  /** Reads a frame by the hello's deadline. */
  read: ReadFrame;
  /** Called once the hello frame has arrived, before it is looked at. */
  spoke?: () => void;
}

/** Reads the preface (answering with ours) and the hello. Throws on frames it cannot decode. */
export async function readHello(link: HandshakeLink, options: ReadHelloOptions): Promise<HelloResult> {
  const preface = await options.read("preface");
  if (!preface) return null;
  const version = preface.payload[0];
  link.send(encodePreface());
  if (version !== PROTOCOL_VERSION) {
    return refusal(
      RejectCode.Version,
      `broker-client speaks protocol version ${version}, this broker-server speaks version ${PROTOCOL_VERSION}: install matching versions of both programs`,
    );
  }
  const hello = await options.read("hello");
  if (!hello) return null;
  options.spoke?.();
  if (hello.type === FrameType.HelloResume) {
    return { kind: "resume", sessionId: hello.payload.slice(0, ID_SIZE), clientNonce: hello.payload.slice(ID_SIZE) };
  }
  if (hello.type !== FrameType.HelloNew) {
    return refusal(RejectCode.Protocol, `expected HELLO, got frame type ${hello.type}`);
  }
  const { publicKey, openToken, replayBufferBytes: clientCap } = decodeHelloNew(hello.payload);
  if (clientCap < MIN_REPLAY_BUFFER_BYTES || clientCap > MAX_REPLAY_BUFFER_BYTES) {
    return refusal(
      RejectCode.Protocol,
      `the client's replay buffer cap of ${clientCap} bytes is out of range (${MIN_REPLAY_BUFFER_BYTES} to ${MAX_REPLAY_BUFFER_BYTES})`,
    );
  }
  return { kind: "open", clientPublicKey: publicKey, openToken, clientCap };
}

/** A refusal. */
export function refusal(code: RejectCodeValue, reason: string): Refusal {
  return { kind: "refused", code, reason };
}

/**
 * Challenges the client to prove the admission key over `serverNonce` and
 * its opening: true when it did, a refusal when not, null when the link
 * closed first.
 */
export async function proveAdmission(
  link: HandshakeLink,
  read: ReadFrame,
  proof: { admission: CryptoKey; request: OpenRequest; serverNonce: Uint8Array },
): Promise<true | Refusal | null> {
  link.send(encodeChallenge(proof.serverNonce));
  const frame = await read("admission proof");
  if (!frame) return null;
  const { clientPublicKey, openToken } = proof.request;
  const input = { clientPublicKey, openToken, serverNonce: proof.serverNonce };
  if (
    frame.type === FrameType.Proof &&
    await verifyAdmission(proof.admission, "client", input, decodeProof(frame.payload).mac)
  ) {
    return true;
  }
  return refusal(
    RejectCode.BadProof,
    "admission refused: the broker-client did not prove the admission key (ADMISSION_KEY)",
  );
}

/** What an admission-signed WELCOME covers besides itself. */
export interface WelcomeSignature {
  /** The admission key. */
  admission: CryptoKey;
  /** The client's public key from its hello. */
  clientPublicKey: Uint8Array;
  /** The client's open token. */
  openToken: Uint8Array;
  /** The nonce of the admission challenge. */
  serverNonce: Uint8Array;
}

/** A WELCOME frame; with an admission key, signed over the opening it answers and the welcome itself. */
export async function welcomeFrame(
  session: { sessionId: Uint8Array; publicKey: Uint8Array; timers: SessionTimers },
  signed: WelcomeSignature | null,
): Promise<Uint8Array> {
  const { sessionId, publicKey, timers } = session;
  const plain = encodeWelcome(sessionId, publicKey, timers);
  if (!signed) return plain;
  const { admission, ...opening } = signed;
  const mac = await signAdmission(admission, "server", { ...opening, welcome: plain.subarray(FRAME_HEADER_SIZE) });
  return encodeWelcome(sessionId, publicKey, timers, mac);
}

/** What a retake proof covers. */
export interface RetakeInput {
  /** The session id's bytes. */
  sessionId: Uint8Array;
  /** The client's open token. */
  openToken: Uint8Array;
  /** The nonce sent with WELCOME_BACK. */
  serverNonce: Uint8Array;
}

/** Reads the proof of a retried opening: true when it proves `key`, false when not, null when the link closed. */
export async function readRetakeProof(
  read: ReadFrame,
  key: CryptoKey,
  input: RetakeInput,
): Promise<boolean | null> {
  const frame = await read("retake proof");
  if (!frame) return null;
  return frame.type === FrameType.Proof && await verifyRetake(key, "client", input, decodeProof(frame.payload).mac);
}

/** A resume proof as read: what the client received, and its MAC (not yet verified). */
export interface ResumeProof {
  kind: "proof";
  /** The client's received offset. */
  receivedOffset: number;
  /** The proof's MAC. */
  mac: Uint8Array;
}

/** Challenges a resuming client with `serverNonce` and reads its proof. */
export async function readResumeProof(
  link: HandshakeLink,
  read: ReadFrame,
  serverNonce: Uint8Array,
): Promise<ResumeProof | Refusal | null> {
  link.send(encodeChallenge(serverNonce));
  const frame = await read("resume proof");
  if (!frame) return null;
  if (frame.type !== FrameType.Proof) {
    return refusal(RejectCode.Protocol, `expected PROOF, got frame type ${frame.type}`);
  }
  const { receivedOffset, mac } = decodeProof(frame.payload);
  return { kind: "proof", receivedOffset, mac };
}

/** What a resume proof covers. */
export interface ResumeInput {
  /** The session id's bytes. */
  sessionId: Uint8Array;
  /** The client's nonce from its hello. */
  clientNonce: Uint8Array;
  /** The nonce of the challenge. */
  serverNonce: Uint8Array;
  /** The client's received offset. */
  receivedOffset: number;
}

/** Whether `proof` verifies with `key`. */
export function verifyResumeProof(key: CryptoKey, input: ResumeInput, mac: Uint8Array): Promise<boolean> {
  return verifyProof(key, "client", input, mac);
}

/**
 * Answers the resume of a session that ended cleanly while the client was
 * away: confirms the final offset, acknowledges it (a clean end means the ERP
 * took every byte and the FIN: the ACKs that said so may have been lost with
 * the last link), and closes.
 */
export async function answerCleanEnd(
  link: HandshakeLink & { closeAfterFlush(): Promise<void> },
  key: CryptoKey,
  input: ResumeInput,
  received: number,
): Promise<void> {
  const mac = await signProof(key, "server", { ...input, receivedOffset: received });
  link.send(encodeProof(FrameType.Resumed, mac, received));
  link.send(encodeOffsetFrame(FrameType.Ack, received));
  link.send(encodeClose());
  await link.closeAfterFlush();
}

/** A hint when a link failed because one side uses TLS and the other does not (`linkTls`: this side does). */
export function tlsHint(err: unknown, linkTls: boolean): string {
  const message = String((err as Error)?.message ?? err);
  if (!linkTls && /0x1603/.test(message)) {
    return " (a TLS client: this broker-server has no LINK_TLS_CERT/LINK_TLS_KEY; set them, or turn LINK_TLS off in smartclient.ini)";
  }
  if (linkTls && /tls|handshake|certificate|corrupt|InvalidData|received/i.test(message)) {
    return " (this broker-server requires TLS on the link: is LINK_TLS set in that smartclient.ini?)";
  }
  return "";
}

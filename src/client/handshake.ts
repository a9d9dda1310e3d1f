/**
 * The client's side of the session handshake: opening a session (HELLO_NEW,
 * the admission proof, WELCOME or WELCOME_BACK and its retake proof) and
 * resuming one (HELLO_RESUME, CHALLENGE, the proofs both ways). No policy:
 * the caller dials, retries and decides what a result means for its session.
 * @module
 */

import {
  decodeProof,
  decodeReject,
  decodeWelcome,
  decodeWelcomeBack,
  encodeAbort,
  encodeHelloNew,
  encodeHelloResume,
  encodeProof,
  type Frame,
  FrameType,
  type Proof,
  PROTOCOL_VERSION,
  type Welcome,
} from "../protocol/frames.ts";
import {
  deriveResumeKey,
  type EphemeralKey,
  type ProofInput,
  randomId,
  signAdmission,
  signProof,
  signRetake,
  verifyAdmission,
  verifyProof,
  verifyRetake,
} from "../protocol/resume_auth.ts";
import type { Link } from "../session/link.ts";

/** The broker server refused: retrying the same request would not help. */
export class RejectedError extends Error {
  override name = "RejectedError";
  /** The reject code from the server. */
  readonly code: number;

  /** Wraps a REJECT from `server`. */
  constructor(server: string, code: number, reason: string) {
    super(`broker server ${server} refused: ${reason}`);
    this.code = code;
  }
}

/** Connects to a broker server and sends the preface and `hello` on the new link. */
export type DialBroker = (hello: Uint8Array) => Promise<Link>;

/** Closes `link` when `signal` aborts (at once if it has), until released: a handshake waiting on it ends then. */
export function closeOnAbort(link: Link, signal: AbortSignal): { release(): void } {
  const close = () => link.close();
  if (signal.aborted) close();
  else signal.addEventListener("abort", close, { once: true });
  return { release: () => signal.removeEventListener("abort", close) };
}

/** Options of openHandshake. */
export interface OpenHandshakeOptions {
  /** Connects to the broker server; its own signal and deadline apply to the connect. */
  dial: DialBroker;
  /** The ephemeral key pair, the same for every attempt of one opening. */
  own: EphemeralKey;
  /** The open token, the same for every attempt of one opening (see encodeHelloNew). */
  openToken: Uint8Array;
  /** The replay buffer cap offered in HELLO_NEW. */
  replayBufferBytes: number;
  /** The admission key (ADMISSION_KEY), or null when none is set. */
  admissionKey: CryptoKey | null;
  /** How long the handshake may take once connected (ms). */
  handshakeTimeoutMs: number;
  /** Clock in ms; default Date.now. */
  now?: () => number;
  /** Closes the link, ending the handshake (not the dial: see `dial`). */
  signal?: AbortSignal;
  /** Called once connected: from then on the server may open the session whatever becomes of the link. */
  connected?: () => void;
  /**
   * Checks the server's WELCOME; throwing refuses the session: the server
   * is told with an ABORT and the opening fails with RejectedError.
   */
  acceptWelcome?: (welcome: Welcome) => void;
}

/** A session opened by openHandshake. */
export interface OpenedSession {
  /** The link the server welcomed the session on. */
  link: Link;
  /** The server's WELCOME (id, public key, timers, cap). */
  welcome: Welcome;
  /** The resume key derived from the key exchange. */
  key: CryptoKey;
  /** True when the server handed back the session of an earlier attempt (WELCOME_BACK), proved both ways. */
  retaken: boolean;
}

/**
 * Opens a session: dials, sends HELLO_NEW, answers an admission challenge,
 * reads WELCOME (or WELCOME_BACK, then proves the key of the earlier attempt
 * and checks the server's proof). Throws RejectedError on REJECT, a version
 * mismatch or a server that cannot prove the admission key; the link is
 * closed on any failure.
 */
export async function openHandshake(options: OpenHandshakeOptions): Promise<OpenedSession> {
  const { own, openToken } = options;
  const now = options.now ?? Date.now;
  const link = await options.dial(encodeHelloNew(own.publicKey, openToken, options.replayBufferBytes));
  options.connected?.();
  const cancellable = options.signal ? closeOnAbort(link, options.signal) : null;
  try {
    const deadline = now() + options.handshakeTimeoutMs;
    const { next, serverNonce } = await admitted(link, options, deadline, now);
    const back = next.type === FrameType.WelcomeBack ? decodeWelcomeBack(next.payload) : null;
    const welcomePayload = back ? back.welcomePayload : next.payload;
    const welcome = back ? back.welcome : decodeWelcome(welcomePayload);
    if (options.admissionKey) await checkAdmissionMac(link, options, serverNonce, welcomePayload, welcome);
    if (options.acceptWelcome) await acceptOrAbort(link, welcome, options.acceptWelcome);
    const key = await deriveResumeKey(own, welcome.publicKey, welcome.sessionId, own.publicKey, welcome.publicKey);
    if (back) {
      // An earlier attempt opened the session: prove that we made it.
      const retake = { sessionId: welcome.sessionId, openToken, serverNonce: back.serverNonce };
      link.send(encodeProof(FrameType.Proof, await signRetake(key, "client", retake), 0));
      const answer = decodeProof((await expectFrame(link, [FrameType.Resumed], "RESUMED", deadline, now)).payload);
      if (!await verifyRetake(key, "server", retake, answer.mac)) {
        throw new Error(`broker server ${link.peer} could not prove that it holds the session`);
      }
    }
    return { link, welcome, key, retaken: back !== null };
  } catch (err) {
    link.close();
    throw err;
  } finally {
    cancellable?.release();
  }
}

/** The input of both admission MACs (the server's also covers its WELCOME). */
function admissionInput(options: OpenHandshakeOptions, serverNonce: Uint8Array) {
  return { clientPublicKey: options.own.publicKey, openToken: options.openToken, serverNonce };
}

/**
 * Reads up to WELCOME or WELCOME_BACK, answering an admission challenge on
 * the way when the server sends one; `serverNonce` is the challenge's (empty
 * without admission), which the server's MAC in WELCOME covers too.
 */
async function admitted(
  link: Link,
  options: OpenHandshakeOptions,
  deadline: number,
  now: () => number,
): Promise<{ next: Frame; serverNonce: Uint8Array }> {
  const admission = options.admissionKey;
  const welcomes = [FrameType.Welcome, FrameType.WelcomeBack];
  const next = await expectFrame(link, [FrameType.Challenge, ...welcomes], "WELCOME", deadline, now);
  if (next.type === FrameType.Challenge && !admission) {
    throw new RejectedError(link.peer, 0, "it requires an admission key: set ADMISSION_KEY in smartclient.ini");
  }
  if (next.type !== FrameType.Challenge && admission) {
    throw new RejectedError(
      link.peer,
      0,
      "it does not use an admission key, but ADMISSION_KEY is set here: refusing a server that cannot prove it",
    );
  }
  if (!admission) return { next, serverNonce: new Uint8Array(0) };
  const input = admissionInput(options, next.payload.slice());
  link.send(encodeProof(FrameType.Proof, await signAdmission(admission, "client", input), 0));
  return { next: await expectFrame(link, welcomes, "WELCOME", deadline, now), serverNonce: input.serverNonce };
}

/** Refuses a server whose WELCOME does not carry a valid admission MAC. */
async function checkAdmissionMac(
  link: Link,
  options: OpenHandshakeOptions,
  serverNonce: Uint8Array,
  welcomePayload: Uint8Array,
  welcome: Welcome,
): Promise<void> {
  const body = welcomePayload.subarray(0, welcomePayload.length - (welcome.admissionMac?.length ?? 0));
  const input = { ...admissionInput(options, serverNonce), welcome: body };
  const ok = welcome.admissionMac !== null && options.admissionKey !== null &&
    await verifyAdmission(options.admissionKey, "server", input, welcome.admissionMac);
  if (!ok) throw new RejectedError(link.peer, 0, "it could not prove the admission key: refusing it");
}

/** Runs `accept` on the WELCOME; if it refuses, tells the server (so that it frees the ERP connection now) and throws. */
async function acceptOrAbort(link: Link, welcome: Welcome, accept: (welcome: Welcome) => void): Promise<void> {
  try {
    accept(welcome);
  } catch (err) {
    const reason = `unusable timers in its WELCOME (${(err as Error).message}): check its appserver.ini`;
    link.send(encodeAbort(`broker-client refuses the session: ${reason}`));
    await link.closeAfterFlush();
    throw new RejectedError(link.peer, 0, reason);
  }
}

/** Options of resumeHandshake and sendResumeProof. */
export interface ResumeHandshakeOptions {
  /** Connects to the broker server that holds the session. */
  dial: DialBroker;
  /** The session to resume. */
  sessionId: Uint8Array;
  /** The session's resume key; null sends random bytes as the proof (tests of a wrong proof). */
  key: CryptoKey | null;
  /** The offset this side has received, stated in the proof. */
  received: number;
  /** How long the handshake may take once connected (ms). */
  handshakeTimeoutMs: number;
  /** Clock in ms; default Date.now. */
  now?: () => number;
  /** Closes the link, ending the handshake. */
  signal?: AbortSignal;
}

/** What the server answered to a resume proof. */
export interface ResumeAnswer {
  /** The link, open unless the server closed it. */
  link: Link;
  /** The frame that answered the proof (RESUMED or REJECT), or, when no CHALLENGE came, the frame instead of it; null at the end of the link. */
  answer: Frame | null;
  /** What the proof covered; null when no CHALLENGE came (no proof was sent). */
  input: ProofInput | null;
}

/** A resume dialed as far as the server's first answer (a CHALLENGE, unless it refused). */
interface ResumeStart {
  link: Link;
  /** The server's first frame, null at the end of the link. */
  first: Frame | null;
  clientNonce: Uint8Array;
  /** When the handshake must be over (clock ms). */
  deadline: number;
}

/** Dials with HELLO_RESUME and reads the server's first answer; the link is closed if reading fails. */
async function startResume(options: ChallengeOptions): Promise<ResumeStart> {
  const now = options.now ?? Date.now;
  const clientNonce = randomId();
  const link = await options.dial(encodeHelloResume(options.sessionId, clientNonce));
  const cancellable = options.signal ? closeOnAbort(link, options.signal) : null;
  try {
    const deadline = now() + options.handshakeTimeoutMs;
    return { link, first: await nextFrame(link, "CHALLENGE", deadline, now), clientNonce, deadline };
  } catch (err) {
    link.close();
    throw err;
  } finally {
    cancellable?.release();
  }
}

/** Options of challengeResume: those of a resume but the key and the offset, stated only with the proof. */
export type ChallengeOptions = Omit<ResumeHandshakeOptions, "key" | "received">;

/**
 * A resume that came as far as the server's CHALLENGE: the new link works
 * both ways, and nothing is committed yet (the server keeps the session on
 * its current link until it verifies a proof).
 */
export interface ResumeChallenge {
  /** The new link. */
  link: Link;
  /** What the proofs cover, but the offset (stated with the proof). */
  input: Omit<ProofInput, "receivedOffset">;
  /** When the handshake must be over (clock ms). */
  deadline: number;
}

/**
 * Dials and reads the CHALLENGE; throws RejectedError on REJECT or a
 * version mismatch. The link is closed on any failure.
 */
export async function challengeResume(options: ChallengeOptions): Promise<ResumeChallenge> {
  const { link, first, clientNonce, deadline } = await startResume(options);
  if (first?.type !== FrameType.Challenge) {
    link.close();
    throw unexpected(link, first, "CHALLENGE");
  }
  return { link, input: { sessionId: options.sessionId, clientNonce, serverNonce: first.payload.slice() }, deadline };
}

/** Options of completeResume. */
export interface CompleteResumeOptions {
  /** The session's resume key. */
  key: CryptoKey;
  /** The offset this side has received, stated in the proof. */
  received: number;
  /** Clock in ms; default Date.now. */
  now?: () => number;
  /** Closes the link, ending the handshake. */
  signal?: AbortSignal;
}

/**
 * Sends the proof on a challenged link (from here the server moves the
 * session to it) and checks the server's RESUMED. Throws RejectedError on
 * REJECT and an Error when the server's proof is wrong; the link is closed
 * on any failure.
 */
export async function completeResume(
  challenge: ResumeChallenge,
  options: CompleteResumeOptions,
): Promise<{ link: Link; resumed: Proof }> {
  const { link, deadline } = challenge;
  const now = options.now ?? Date.now;
  const cancellable = options.signal ? closeOnAbort(link, options.signal) : null;
  try {
    const input = { ...challenge.input, receivedOffset: options.received };
    link.send(encodeProof(FrameType.Proof, await signProof(options.key, "client", input), options.received));
    const answer = await nextFrame(link, "RESUMED", deadline, now);
    const resumed = decodeProof(expected(link, answer, [FrameType.Resumed], "RESUMED").payload);
    const serverInput = { ...input, receivedOffset: resumed.receivedOffset };
    if (!await verifyProof(options.key, "server", serverInput, resumed.mac)) {
      throw new Error(`broker server ${link.peer} could not prove that it holds the session`);
    }
    return { link, resumed };
  } catch (err) {
    link.close();
    throw err;
  } finally {
    cancellable?.release();
  }
}

/**
 * Dials, reads the CHALLENGE and sends the proof; returns the server's
 * answer without judging it (tests look at it as it is). The link is
 * closed if reading fails, not when the answer is a refusal.
 */
export async function sendResumeProof(options: ResumeHandshakeOptions): Promise<ResumeAnswer> {
  const now = options.now ?? Date.now;
  const { link, first, clientNonce, deadline } = await startResume(options);
  if (first?.type !== FrameType.Challenge) return { link, answer: first, input: null };
  const cancellable = options.signal ? closeOnAbort(link, options.signal) : null;
  try {
    const { sessionId, key, received } = options;
    const input = { sessionId, clientNonce, serverNonce: first.payload.slice(), receivedOffset: received };
    const mac = key ? await signProof(key, "client", input) : crypto.getRandomValues(new Uint8Array(32));
    link.send(encodeProof(FrameType.Proof, mac, received));
    return { link, answer: await nextFrame(link, "RESUMED", deadline, now), input };
  } catch (err) {
    link.close();
    throw err;
  } finally {
    cancellable?.release();
  }
}

/**
 * Resumes a session: proves both ways that each side holds it. Returns
 * the link and the server's RESUMED (with the offset it has received);
 * throws RejectedError on REJECT or a version mismatch, and an Error when
 * the server's proof is wrong. The link is closed on any failure.
 */
export async function resumeHandshake(
  options: ResumeHandshakeOptions & { key: CryptoKey },
): Promise<{ link: Link; resumed: Proof }> {
  return await completeResume(await challengeResume(options), options);
}

/**
 * The next handshake frame other than the server's preface, or null at the
 * end of the link; a preface of another protocol version becomes a
 * RejectedError (with the reason of the REJECT that follows it, if any).
 */
async function nextFrame(link: Link, what: string, deadline: number, now: () => number): Promise<Frame | null> {
  for (;;) {
    const frame = await link.readFrameWithin(Math.max(1, deadline - now()), what);
    if (frame?.type !== FrameType.Preface) return frame;
    const version = frame.payload[0];
    if (version !== PROTOCOL_VERSION) {
      // The server explains in the REJECT that follows; say it plainly if it does not.
      const next = await link.readFrameWithin(Math.max(1, deadline - now()), what).catch(() => null);
      const reason = next?.type === FrameType.Reject ? decodeReject(next.payload).reason : "";
      throw new RejectedError(
        link.peer,
        0,
        `it speaks protocol version ${version}, this broker-client speaks ${PROTOCOL_VERSION}${
          reason ? ` (${reason})` : ""
        }`,
      );
    }
  }
}

/** `frame` if it is one of `types`; the end of the link, a REJECT or another type becomes an error. */
function expected(link: Link, frame: Frame | null, types: number[], what: string): Frame {
  if (frame && types.includes(frame.type)) return frame;
  throw unexpected(link, frame, what);
}

/** The error for `frame` coming where `what` was expected: RejectedError for a REJECT. */
function unexpected(link: Link, frame: Frame | null, what: string): Error {
  if (!frame) return new Error(`broker server ${link.peer} closed the link during the handshake`);
  if (frame.type === FrameType.Reject) {
    const { code, reason } = decodeReject(frame.payload);
    return new RejectedError(link.peer, code, reason);
  }
  return new Error(`broker server ${link.peer} sent frame type ${frame.type}, expected ${what}`);
}

/** Reads the next handshake frame; a REJECT or an unexpected type becomes an error. */
async function expectFrame(
  link: Link,
  types: number[],
  what: string,
  deadline: number,
  now: () => number,
): Promise<Frame> {
  return expected(link, await nextFrame(link, what, deadline, now), types, what);
}

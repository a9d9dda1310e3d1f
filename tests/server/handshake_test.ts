import { deepEqual, equal, ok } from "node:assert/strict";
import {
  encodeHelloNew,
  encodeHelloResume,
  encodePreface,
  encodeProof,
  encodeReject,
  type Frame,
  FrameDecoder,
  FrameType,
  ID_SIZE,
  MAC_SIZE,
  PROTOCOL_VERSION,
  RejectCode,
} from "../../src/protocol/frames.ts";
import {
  createEphemeralKey,
  importAdmissionKey,
  importResumeKey,
  randomId,
  signAdmission,
  signProof,
} from "../../src/protocol/resume_auth.ts";
import { MIN_REPLAY_BUFFER_BYTES } from "../../src/config/tuning.ts";
import {
  type HandshakeLink,
  proveAdmission,
  readHello,
  readResumeProof,
  verifyResumeProof,
} from "../../src/server/handshake.ts";

/** A link over memory: reads what the test wrote as the client, keeps what the server sent. */
class MemoryLink implements HandshakeLink {
  #incoming = new FrameDecoder();
  readonly sent: Uint8Array[] = [];
  readonly reads: string[] = [];

  #prefaced: boolean;

  constructor(...fromClient: Uint8Array[]) {
    for (const bytes of fromClient) this.#incoming.push(bytes);
    this.#prefaced = false;
  }

  /** A link past both prefaces (the handshake is further on). */
  static prefaced(...fromClient: Uint8Array[]): MemoryLink {
    const link = new MemoryLink(encodePreface(), ...fromClient);
    link.#incoming.next();
    link.#prefaced = true;
    return link;
  }

  send(frame: Uint8Array): void {
    this.sent.push(frame);
  }

  readFrameWithin(_ms: number, what: string): Promise<Frame | null> {
    this.reads.push(what);
    return Promise.resolve(this.#incoming.next());
  }

  /** The frames the server sent, decoded. */
  sentFrames(): Frame[] {
    const decoder = new FrameDecoder();
    if (this.#prefaced) decoder.push(encodePreface());
    for (const bytes of this.sent) decoder.push(bytes);
    if (this.#prefaced) decoder.next();
    const frames: Frame[] = [];
    for (let f = decoder.next(); f; f = decoder.next()) frames.push(f);
    return frames;
  }
}

const read = (link: MemoryLink) => (what: string) => link.readFrameWithin(1_000, what);

Deno.test("handshake: a new session's hello answers the preface and comes back as an open request", async () => {
  const { publicKey } = await createEphemeralKey();
  const token = randomId();
  const link = new MemoryLink(encodePreface(), encodeHelloNew(publicKey, token, MIN_REPLAY_BUFFER_BYTES));
  let spoke = 0;
  const hello = await readHello(link, { read: read(link), spoke: () => spoke++ });
  deepEqual(hello, { kind: "open", clientPublicKey: publicKey, openToken: token, clientCap: MIN_REPLAY_BUFFER_BYTES });
  equal(spoke, 1);
  deepEqual(link.reads, ["preface", "hello"]);
  equal(link.sentFrames()[0]?.type, FrameType.Preface);
});

Deno.test("handshake: a resume hello comes back with its session id and nonce", async () => {
  const sessionId = randomId();
  const nonce = randomId();
  const link = new MemoryLink(encodePreface(), encodeHelloResume(sessionId, nonce));
  deepEqual(await readHello(link, { read: read(link) }), { kind: "resume", sessionId, clientNonce: nonce });
});

Deno.test("handshake: another protocol version is refused after our preface, before any hello is read", async () => {
  const link = new MemoryLink(encodePreface(PROTOCOL_VERSION + 1));
  const hello = await readHello(link, { read: read(link), spoke: () => ok(false, "no hello was read") });
  equal(hello?.kind, "refused");
  if (hello?.kind !== "refused") return;
  equal(hello.code, RejectCode.Version);
  ok(hello.reason.includes(`version ${PROTOCOL_VERSION + 1}`), hello.reason);
  deepEqual(link.reads, ["preface"]);
  equal(link.sentFrames()[0]?.type, FrameType.Preface);
});

Deno.test("handshake: a first frame that is no hello is refused; a cap out of range too", async () => {
  const wrong = new MemoryLink(encodePreface(), encodeReject(RejectCode.Protocol, "hi"));
  const notHello = await readHello(wrong, { read: read(wrong) });
  deepEqual(notHello, {
    kind: "refused",
    code: RejectCode.Protocol,
    reason: `expected HELLO, got frame type ${FrameType.Reject}`,
  });
  const { publicKey } = await createEphemeralKey();
  const small = new MemoryLink(encodePreface(), encodeHelloNew(publicKey, randomId(), MIN_REPLAY_BUFFER_BYTES - 1));
  const tooSmall = await readHello(small, { read: read(small) });
  equal(tooSmall?.kind, "refused");
  ok(tooSmall?.kind === "refused" && /replay buffer cap of \d+ bytes is out of range/.test(tooSmall.reason));
});

Deno.test("handshake: a link that closes before its hello gives null", async () => {
  const silent = new MemoryLink();
  equal(await readHello(silent, { read: read(silent) }), null);
  const prefaceOnly = new MemoryLink(encodePreface());
  equal(await readHello(prefaceOnly, { read: read(prefaceOnly) }), null);
});

Deno.test("handshake: a resume proof is read after the challenge and verifies only with the session's key", async () => {
  const secret = crypto.getRandomValues(new Uint8Array(32));
  const key = await importResumeKey(secret);
  const other = await importResumeKey(crypto.getRandomValues(new Uint8Array(32)));
  const serverNonce = randomId();
  const input = { sessionId: randomId(), clientNonce: randomId(), serverNonce, receivedOffset: 7 };
  const mac = await signProof(key, "client", input);
  const link = MemoryLink.prefaced(encodeProof(FrameType.Proof, mac, 7));
  const proof = await readResumeProof(link, read(link), serverNonce);
  equal(proof?.kind, "proof");
  if (proof?.kind !== "proof") return;
  equal(proof.receivedOffset, 7);
  deepEqual(link.sentFrames().map((f) => [f.type, f.payload.length]), [[FrameType.Challenge, ID_SIZE]]);
  ok(await verifyResumeProof(key, input, proof.mac));
  ok(!await verifyResumeProof(other, input, proof.mac));
  ok(!await verifyResumeProof(key, { ...input, receivedOffset: 8 }, proof.mac));
});

Deno.test("handshake: a resume answered with another frame than PROOF is refused", async () => {
  const link = MemoryLink.prefaced(encodeHelloResume(randomId(), randomId()));
  const proof = await readResumeProof(link, read(link), randomId());
  equal(proof?.kind, "refused");
  equal(proof?.kind === "refused" ? proof.code : -1, RejectCode.Protocol);
});

Deno.test("handshake: an admission proof passes with the admission key, and is refused as BadProof without", async () => {
  const admission = await importAdmissionKey("a".repeat(32));
  const { publicKey } = await createEphemeralKey();
  const request = { kind: "open" as const, clientPublicKey: publicKey, openToken: randomId(), clientCap: 1 << 20 };
  const serverNonce = randomId();
  const mac = await signAdmission(admission, "client", {
    clientPublicKey: publicKey,
    openToken: request.openToken,
    serverNonce,
  });
  const good = MemoryLink.prefaced(encodeProof(FrameType.Proof, mac, 0));
  equal(await proveAdmission(good, read(good), { admission, request, serverNonce }), true);
  equal(good.sentFrames()[0]?.type, FrameType.Challenge);
  const bad = MemoryLink.prefaced(encodeProof(FrameType.Proof, new Uint8Array(MAC_SIZE), 0));
  const result = await proveAdmission(bad, read(bad), { admission, request, serverNonce });
  ok(result !== true && result !== null && result.code === RejectCode.BadProof);
  const quiet = MemoryLink.prefaced();
  equal(await proveAdmission(quiet, read(quiet), { admission, request, serverNonce }), null);
});

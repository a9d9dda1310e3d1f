import { equal, match, notEqual, ok, rejects } from "node:assert/strict";
import {
  type DialBroker,
  openHandshake,
  type OpenHandshakeOptions,
  RejectedError,
  resumeHandshake,
  sendResumeProof,
} from "../../src/client/handshake.ts";
import {
  decodeHelloNew,
  decodeProof,
  decodeReject,
  encodeChallenge,
  encodePreface,
  encodeProof,
  encodeReject,
  encodeWelcome,
  encodeWelcomeBack,
  type Frame,
  FRAME_HEADER_SIZE,
  FrameType,
  PROTOCOL_VERSION,
  RejectCode,
} from "../../src/protocol/frames.ts";
import {
  createEphemeralKey,
  deriveResumeKey,
  type EphemeralKey,
  importAdmissionKey,
  importResumeKey,
  randomId,
  signAdmission,
  signProof,
  signRetake,
  verifyAdmission,
  verifyProof,
  verifyRetake,
} from "../../src/protocol/resume_auth.ts";
import { Link } from "../../src/session/link.ts";

const TIMERS = {
  resumeTimeoutMs: 180_000,
  heartbeatIntervalMs: 1_000,
  linkTimeoutMs: 5_000,
  replayBufferBytes: 1 << 20,
};

/**
 * A broker server that plays `script` on the first link it accepts, on
 * 127.0.0.1 port 0. The script gets the link and the client's HELLO (its
 * preface already read).
 */
function scriptedServer(script: (link: Link, hello: Frame) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const played = (async () => {
    const conn = await listener.accept();
    const link = new Link(conn, "fake client");
    try {
      const preface = await link.readFrameWithin(5_000, "preface");
      equal(preface?.type, FrameType.Preface);
      const hello = await link.readFrameWithin(5_000, "hello");
      ok(hello, "the client sent its hello");
      await script(link, hello);
    } finally {
      link.close();
    }
  })();
  const dial: DialBroker = async (hello) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port });
    const link = new Link(conn, "fake server");
    link.send(encodePreface());
    link.send(hello);
    return link;
  };
  return {
    dial,
    /** Resolves when the script has ended. */
    done: played,
    /** Waits for the script to end, then stops listening. */
    async [Symbol.asyncDispose]() {
      try {
        await played;
      } finally {
        listener.close();
      }
    },
  };
}

/** What the server side of an opening derives: the session id, its key pair, the shared key. */
async function serverSide(hello: Frame) {
  const { publicKey: clientPublicKey, openToken } = decodeHelloNew(hello.payload);
  const own = await createEphemeralKey();
  const sessionId = randomId();
  const key = await deriveResumeKey(own, clientPublicKey, sessionId, clientPublicKey, own.publicKey);
  return { sessionId, own, key, clientPublicKey, openToken };
}

async function openOptions(dial: DialBroker, more: Partial<OpenHandshakeOptions> = {}): Promise<OpenHandshakeOptions> {
  const own: EphemeralKey = await createEphemeralKey();
  return {
    dial,
    own,
    openToken: randomId(),
    replayBufferBytes: 1 << 20,
    admissionKey: null,
    handshakeTimeoutMs: 5_000,
    ...more,
  };
}

/** Proves that the client's key is the server's: a MAC by one verifies with the other. */
async function sameKey(client: CryptoKey, server: CryptoKey): Promise<boolean> {
  const input = { sessionId: randomId(), clientNonce: randomId(), serverNonce: randomId(), receivedOffset: 7 };
  return await verifyProof(server, "client", input, await signProof(client, "client", input));
}

Deno.test("open: WELCOME gives the session id, the server's timers and a key the server derived too", async () => {
  let serverKey: CryptoKey | null = null;
  let sessionId: Uint8Array = new Uint8Array(0);
  let offered = 0;
  await using server = scriptedServer(async (link, hello) => {
    equal(hello.type, FrameType.HelloNew);
    offered = decodeHelloNew(hello.payload).replayBufferBytes;
    const side = await serverSide(hello);
    serverKey = side.key;
    sessionId = side.sessionId;
    link.send(encodePreface());
    link.send(encodeWelcome(side.sessionId, side.own.publicKey, TIMERS));
    await link.readFrameWithin(5_000, "end").catch(() => null);
  });
  const opened = await openHandshake(await openOptions(server.dial, { replayBufferBytes: 123_456 }));
  try {
    equal(offered, 123_456, "HELLO_NEW offers the configured cap");
    equal(opened.retaken, false);
    equal(opened.welcome.heartbeatIntervalMs, 1_000);
    equal(opened.welcome.replayBufferBytes, 1 << 20);
    equal(opened.welcome.sessionId.join(), sessionId.join());
    ok(await sameKey(opened.key, serverKey!), "both ends hold the same resume key");
  } finally {
    opened.link.close();
  }
});

Deno.test("open: a server of another protocol version is refused, with its own explanation", async () => {
  await using server = scriptedServer(async (link) => {
    link.send(encodePreface(PROTOCOL_VERSION + 1));
    link.send(encodeReject(RejectCode.Version, "upgrade broker-client"));
    await link.readFrameWithin(5_000, "close").catch(() => null);
  });
  const err = await openHandshake(await openOptions(server.dial)).catch((e) => e);
  ok(err instanceof RejectedError, String(err));
  match(
    err.message,
    new RegExp(
      `speaks protocol version ${PROTOCOL_VERSION + 1}, this broker-client speaks ${PROTOCOL_VERSION} \\(upgrade`,
    ),
  );
});

Deno.test("open: a REJECT becomes RejectedError with the server's code and reason; the link is closed", async () => {
  let closedByClient = false;
  await using server = scriptedServer(async (link) => {
    link.send(encodePreface());
    link.send(encodeReject(RejectCode.Unavailable, "too many sessions"));
    closedByClient = await link.readFrameWithin(5_000, "end").then((f) => f === null, () => true);
  });
  const err = await openHandshake(await openOptions(server.dial)).catch((e) => e);
  ok(err instanceof RejectedError, String(err));
  equal(err.code, RejectCode.Unavailable);
  equal(err.message, "broker server fake server refused: too many sessions");
  await server.done;
  ok(closedByClient, "the client closed the link");
});

/** A server that challenges for admission with `serverAdmission`, checks the client's proof and signs its WELCOME. */
function admissionServer(serverAdmission: CryptoKey, clientProofOk: { value: boolean | null }) {
  return scriptedServer(async (link, hello) => {
    const side = await serverSide(hello);
    const serverNonce = randomId();
    link.send(encodePreface());
    link.send(encodeChallenge(serverNonce));
    const proof = await link.readFrameWithin(5_000, "PROOF");
    if (proof?.type !== FrameType.Proof) return;
    const input = { clientPublicKey: side.clientPublicKey, openToken: side.openToken, serverNonce };
    clientProofOk.value = await verifyAdmission(serverAdmission, "client", input, decodeProof(proof.payload).mac);
    const body = encodeWelcome(side.sessionId, side.own.publicKey, TIMERS).subarray(FRAME_HEADER_SIZE);
    const mac = await signAdmission(serverAdmission, "server", { ...input, welcome: body });
    link.send(encodeWelcome(side.sessionId, side.own.publicKey, TIMERS, mac));
    await link.readFrameWithin(5_000, "end").catch(() => null);
  });
}

Deno.test("open: an admission challenge is answered, and the server's WELCOME must prove the same admission key", async () => {
  const admission = await importAdmissionKey("correct horse battery staple 42");
  const clientProofOk = { value: null as boolean | null };
  {
    await using server = admissionServer(admission, clientProofOk);
    const opened = await openHandshake(await openOptions(server.dial, { admissionKey: admission }));
    opened.link.close();
  }
  equal(clientProofOk.value, true, "the server accepted the client's admission proof");

  const other = await importAdmissionKey("another key, not the client's one");
  {
    await using server = admissionServer(other, clientProofOk);
    const err = await openHandshake(await openOptions(server.dial, { admissionKey: admission })).catch((e) => e);
    ok(err instanceof RejectedError, String(err));
    match(err.message, /could not prove the admission key/);
  }
  equal(clientProofOk.value, false, "a server with another key sees a wrong proof");
});

Deno.test("open: a challenge without ADMISSION_KEY here, or ADMISSION_KEY here and no challenge, is refused", async () => {
  {
    await using server = admissionServer(await importAdmissionKey("some admission key, long enough"), { value: null });
    const err = await openHandshake(await openOptions(server.dial)).catch((e) => e);
    ok(err instanceof RejectedError);
    match(err.message, /requires an admission key: set ADMISSION_KEY/);
  }
  {
    await using server = scriptedServer(async (link, hello) => {
      const side = await serverSide(hello);
      link.send(encodePreface());
      link.send(encodeWelcome(side.sessionId, side.own.publicKey, TIMERS));
      await link.readFrameWithin(5_000, "end").catch(() => null);
    });
    const admissionKey = await importAdmissionKey("some admission key, long enough");
    const err = await openHandshake(await openOptions(server.dial, { admissionKey })).catch((e) => e);
    ok(err instanceof RejectedError);
    match(err.message, /does not use an admission key, but ADMISSION_KEY is set here/);
  }
});

/** A server that hands back an earlier opening (WELCOME_BACK) and answers the retake proof, signing with `sign` (default the session's key). */
function retakeServer(seen: { proofOk: boolean | null }, signWith?: CryptoKey) {
  return scriptedServer(async (link, hello) => {
    const side = await serverSide(hello);
    const serverNonce = randomId();
    link.send(encodePreface());
    link.send(encodeWelcomeBack(serverNonce, encodeWelcome(side.sessionId, side.own.publicKey, TIMERS)));
    const proof = await link.readFrameWithin(5_000, "PROOF");
    if (proof?.type !== FrameType.Proof) return;
    const retake = { sessionId: side.sessionId, openToken: side.openToken, serverNonce };
    seen.proofOk = await verifyRetake(side.key, "client", retake, decodeProof(proof.payload).mac);
    link.send(encodeProof(FrameType.Resumed, await signRetake(signWith ?? side.key, "server", retake), 0));
    await link.readFrameWithin(5_000, "end").catch(() => null);
  });
}

Deno.test("open: WELCOME_BACK is taken back with a retake proof both ways", async () => {
  const seen = { proofOk: null as boolean | null };
  {
    await using server = retakeServer(seen);
    const opened = await openHandshake(await openOptions(server.dial));
    equal(opened.retaken, true);
    opened.link.close();
  }
  equal(seen.proofOk, true, "the server accepted the client's retake proof");
});

Deno.test("open: a WELCOME_BACK whose RESUMED does not prove the session's key fails", async () => {
  const seen = { proofOk: null as boolean | null };
  await using server = retakeServer(seen, await importResumeKey(crypto.getRandomValues(new Uint8Array(32))));
  const err = await openHandshake(await openOptions(server.dial)).catch((e) => e);
  ok(!(err instanceof RejectedError), String(err));
  match(String(err), /broker server fake server could not prove that it holds the session/);
});

Deno.test("open: a WELCOME that acceptWelcome refuses is answered with ABORT and fails as RejectedError", async () => {
  let abortReason = "";
  await using server = scriptedServer(async (link, hello) => {
    const side = await serverSide(hello);
    link.send(encodePreface());
    link.send(encodeWelcome(side.sessionId, side.own.publicKey, TIMERS));
    const frame = await link.readFrameWithin(5_000, "ABORT");
    if (frame?.type === FrameType.Abort) abortReason = new TextDecoder().decode(frame.payload);
  });
  let connected = 0;
  const err = await openHandshake(
    await openOptions(server.dial, {
      connected: () => connected++,
      acceptWelcome: () => {
        throw new RangeError("heartbeat too slow");
      },
    }),
  ).catch((e) => e);
  ok(err instanceof RejectedError, String(err));
  match(err.message, /unusable timers in its WELCOME \(heartbeat too slow\)/);
  equal(connected, 1);
  await server.done;
  match(abortReason, /broker-client refuses the session: unusable timers/);
});

Deno.test("open: a silent server fails within the handshake deadline; the signal closes the link earlier", async () => {
  {
    await using server = scriptedServer(async (link) => {
      await link.readFrameWithin(5_000, "end").catch(() => null);
    });
    const started = Date.now();
    await rejects(openHandshake(await openOptions(server.dial, { handshakeTimeoutMs: 100 })), Deno.errors.TimedOut);
    ok(Date.now() - started < 3_000);
  }
  {
    await using server = scriptedServer(async (link) => {
      await link.readFrameWithin(5_000, "end").catch(() => null);
    });
    const err = await openHandshake(await openOptions(server.dial, { signal: AbortSignal.timeout(50) })).catch((e) =>
      e
    );
    ok(err instanceof Error && !(err instanceof Deno.errors.TimedOut), String(err));
  }
});

/** A server that challenges a resume, checks the proof with `key` and answers RESUMED signed with `signWith`. */
function resumeServer(key: CryptoKey, seen: { proofOk: boolean | null; received: number }, signWith = key) {
  return scriptedServer(async (link, hello) => {
    equal(hello.type, FrameType.HelloResume);
    const sessionId = hello.payload.slice(0, 16);
    const clientNonce = hello.payload.slice(16, 32);
    const serverNonce = randomId();
    link.send(encodePreface());
    link.send(encodeChallenge(serverNonce));
    const frame = await link.readFrameWithin(5_000, "PROOF");
    if (frame?.type !== FrameType.Proof) return;
    const proof = decodeProof(frame.payload);
    seen.received = proof.receivedOffset;
    const input = { sessionId, clientNonce, serverNonce, receivedOffset: proof.receivedOffset };
    seen.proofOk = await verifyProof(key, "client", input, proof.mac);
    const mac = await signProof(signWith, "server", { ...input, receivedOffset: 4_242 });
    link.send(encodeProof(FrameType.Resumed, mac, 4_242));
    await link.readFrameWithin(5_000, "end").catch(() => null);
  });
}

Deno.test("resume: proofs both ways; RESUMED states what the server has received", async () => {
  const key = await importResumeKey(crypto.getRandomValues(new Uint8Array(32)));
  const seen = { proofOk: null as boolean | null, received: -1 };
  {
    await using server = resumeServer(key, seen);
    const { link, resumed } = await resumeHandshake({
      dial: server.dial,
      sessionId: randomId(),
      key,
      received: 1_000,
      handshakeTimeoutMs: 5_000,
    });
    equal(resumed.receivedOffset, 4_242);
    link.close();
  }
  equal(seen.proofOk, true);
  equal(seen.received, 1_000, "the proof states what the client has received");
});

Deno.test("resume: a RESUMED that does not prove the session's key fails, and the link is closed", async () => {
  const key = await importResumeKey(crypto.getRandomValues(new Uint8Array(32)));
  const impostor = await importResumeKey(crypto.getRandomValues(new Uint8Array(32)));
  const seen = { proofOk: null as boolean | null, received: -1 };
  await using server = resumeServer(key, seen, impostor);
  const err = await resumeHandshake({
    dial: server.dial,
    sessionId: randomId(),
    key,
    received: 0,
    handshakeTimeoutMs: 5_000,
  })
    .catch((e) => e);
  ok(!(err instanceof RejectedError), String(err));
  match(String(err), /broker server fake server could not prove that it holds the session/);
});

Deno.test("resume: a REJECT instead of CHALLENGE is RejectedError; sendResumeProof hands it back as it came", async () => {
  const key = await importResumeKey(crypto.getRandomValues(new Uint8Array(32)));
  const refusing = () =>
    scriptedServer(async (link) => {
      link.send(encodePreface());
      link.send(encodeReject(RejectCode.UnknownSession, "no such session"));
      await link.readFrameWithin(5_000, "end").catch(() => null);
    });
  {
    await using server = refusing();
    const options = { dial: server.dial, sessionId: randomId(), key, received: 0, handshakeTimeoutMs: 5_000 };
    const err = await resumeHandshake(options).catch((e) => e);
    ok(err instanceof RejectedError, String(err));
    equal(err.code, RejectCode.UnknownSession);
  }
  {
    await using server = refusing();
    const options = { dial: server.dial, sessionId: randomId(), key, received: 0, handshakeTimeoutMs: 5_000 };
    const { link, answer, input } = await sendResumeProof(options);
    equal(answer?.type, FrameType.Reject);
    equal(decodeReject(answer!.payload).code, RejectCode.UnknownSession);
    equal(input, null, "no proof was sent");
    link.close();
  }
});

Deno.test("resume: sendResumeProof with a null key sends a proof the server cannot verify", async () => {
  const key = await importResumeKey(crypto.getRandomValues(new Uint8Array(32)));
  const seen = { proofOk: null as boolean | null, received: -1 };
  {
    await using server = resumeServer(key, seen);
    const { link, answer, input } = await sendResumeProof({
      dial: server.dial,
      sessionId: randomId(),
      key: null,
      received: 5,
      handshakeTimeoutMs: 5_000,
    });
    equal(answer?.type, FrameType.Resumed, "this fake server answers anyway");
    notEqual(input, null);
    link.close();
  }
  equal(seen.proofOk, false);
});

import { deepEqual, equal, match, ok } from "node:assert/strict";
import { systemClock } from "../../src/session/clock.ts";
import {
  AcceptErrors,
  acceptLoop,
  type AcceptNote,
  classifyAcceptError,
  descriptorsNeeded,
  parseOpenFileLimit,
} from "../../src/ops/accept_errors.ts";

/** An error as Deno reports a failed accept(): a message and an errno name. */
function osError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

const EMFILE = osError("EMFILE", "Too many open files (os error 24)");
const ENOTCONN = new Deno.errors.NotConnected("Transport endpoint is not connected (os error 107)");

function policy(now: () => number): AcceptErrors {
  return new AcceptErrors({ what: "links", advice: "raise it", openFileLimit: 1024, now });
}

Deno.test("accept errors: resets and aborts are the peer's; out of files is out of descriptors", () => {
  equal(classifyAcceptError(ENOTCONN), "peer");
  equal(classifyAcceptError(new Deno.errors.ConnectionReset("reset")), "peer");
  equal(classifyAcceptError(new Deno.errors.ConnectionAborted("aborted")), "peer");
  equal(classifyAcceptError(osError("ECONNABORTED", "Software caused connection abort")), "peer");
  equal(classifyAcceptError(EMFILE), "descriptors");
  equal(classifyAcceptError(osError("ENFILE", "Too many open files in system (os error 23)")), "descriptors");
  equal(classifyAcceptError(new Error("something else")), "other");
});

Deno.test("accept errors: 300 peer resets make one debug line per 10 s, and no wait", () => {
  let t = 0;
  const errors = policy(() => t);
  const notes = [];
  for (let i = 0; i < 300; i++) {
    const { delayMs, note } = errors.failed(ENOTCONN);
    equal(delayMs, 0);
    if (note) notes.push(note);
    t += 10; // 300 resets in 3 s
  }
  equal(notes.length, 1);
  equal(notes[0]?.level, "debug");
  t += 10_000;
  const next = errors.failed(ENOTCONN).note;
  equal(next?.level, "debug");
  equal(next?.fields.count, 300, "the next line counts the ones in between");
});

Deno.test("accept errors: out of descriptors is said once with the limit, retried with backoff, and its end is said", () => {
  let t = 0;
  const errors = policy(() => t);
  const waits: number[] = [];
  const notes = [];
  // What a tight loop did for 3 s: here it waits, so it tries a few times only.
  while (t < 3_000) {
    const { delayMs, note } = errors.failed(EMFILE);
    if (note) notes.push(note);
    waits.push(delayMs);
    t += delayMs;
  }
  equal(notes.length, 1);
  equal(notes[0]?.level, "error");
  match(String(notes[0]?.message), /out of file descriptors\{limit\}/);
  equal(notes[0]?.fields.limit, " (the limit is 1024 open files)");
  equal(notes[0]?.fields.advice, "raise it");
  deepEqual(waits.slice(0, 6), [50, 100, 200, 400, 800, 1000]);
  ok(waits.length < 10, `${waits.length} attempts in 3 s`);
  const recovered = errors.succeeded();
  equal(recovered?.level, "warning");
  equal(recovered?.fields.failures, waits.length);
  equal(errors.succeeded(), null, "said once");
  equal(errors.failed(EMFILE).delayMs, 50, "a new run starts with a short wait again");
});

Deno.test("accept errors: other failures are logged as errors at most every 10 s, with backoff", () => {
  let t = 0;
  const errors = policy(() => t);
  const first = errors.failed(new Error("odd"));
  equal(first.note?.level, "error");
  equal(first.delayMs, 50);
  equal(errors.failed(new Error("odd")).note, null);
  t = 10_000;
  equal(errors.failed(new Error("odd")).note?.fields.count, 2);
});

Deno.test("open-file limit: read from /proc/self/limits; what broker-server's limits need", () => {
  const text = [
    "Limit                     Soft Limit           Hard Limit           Units     ",
    "Max processes             63704                63704                processes ",
    "Max open files            1024                 524288               files     ",
  ].join("\n");
  equal(parseOpenFileLimit(text), 1024);
  equal(parseOpenFileLimit(text.replace("1024 ", "unlimited ")), null);
  equal(parseOpenFileLimit("nothing"), null);
  equal(descriptorsNeeded({ maxSessions: 5000, maxHandshakes: 500 }), 11_064);
});

Deno.test("the accept loop hands over each connection, rides out failures with a note, and ends when the listener closes", async () => {
  const accepted: string[] = [];
  const notes: AcceptNote[] = [];
  let noDelay = 0;
  const conn = (name: string) => ({ name, setNoDelay: () => noDelay++ }) as unknown as Deno.TcpConn;
  const script: (() => Deno.TcpConn)[] = [
    () => conn("a"),
    () => {
      throw EMFILE;
    },
    () => conn("b"),
    () => {
      throw new Deno.errors.BadResource("listener closed");
    },
  ];
  const listener = {
    accept: () => {
      const step = script.shift();
      return step ? Promise.resolve().then(step) : new Promise<Deno.TcpConn>(() => {});
    },
  } as unknown as Deno.TcpListener;
  let t = 0;
  await acceptLoop(listener, {
    what: "links",
    advice: "raise it",
    openFileLimit: 1024,
    clock: { ...systemClock, now: () => t += 100 },
    signal: new AbortController().signal,
    log: (note) => notes.push(note),
  }, (c) => accepted.push((c as unknown as { name: string }).name));
  deepEqual(accepted, ["a", "b"]);
  equal(noDelay, 2, "Nagle is off on every accepted connection");
  equal(notes.length, 2, "one note when descriptors ran out, one when accepting worked again");
  match(notes[0]?.message ?? "", /descriptor|open files/i);
  equal(script.length, 0, "the loop stopped at the closed listener");
});

Deno.test("accept errors: a limit given as a function is read only when descriptors run out", () => {
  let asked = 0;
  const errors = new AcceptErrors({
    what: "links",
    advice: "raise it",
    openFileLimit: () => (asked++, 4096),
    now: () => 0,
  });
  errors.failed(ENOTCONN);
  errors.failed(new Error("something else"));
  equal(asked, 0, "starting and other failures cost no look-up");
  equal(errors.failed(EMFILE).note?.fields.limit, " (the limit is 4096 open files)");
  equal(asked, 1);
});

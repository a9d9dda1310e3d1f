/**
 * Simulated applications for the two ends of a session: Smart Client
 * (which dials) and the ERP (which accepts). A plan, drawn from the world's
 * random source, says what each end writes and how it behaves (request and
 * response, bulk one way or both ways at once, write everything before
 * reading, slow reader, half-close then keep reading, close at once, reset
 * mid-stream). Each end writes a stream whose bytes follow from the plan's
 * seed, and checks what it reads against the stream the other end writes:
 * so a lost, repeated or reordered byte is found without keeping copies.
 * @module
 */

import type { Transport } from "../../src/session/transport.ts";
import type { VirtualClock } from "./clock.ts";
import type { Rng } from "./rng.ts";

/** The behaviours an application pair can have. */
export const APP_KINDS = [
  "request-response",
  "bulk-to-erp",
  "bulk-to-client",
  "bulk-both",
  "client-writes-first",
  "erp-writes-first",
  "slow-reader",
  "client-half-closes",
  "erp-half-closes",
  "both-close",
  "zero-bytes",
  "client-resets",
  "erp-resets",
] as const;

/** One behaviour. */
export type AppKind = typeof APP_KINDS[number];

/** What a pair of applications does. */
export interface AppPlan {
  kind: AppKind;
  /** Seed of the bytes each side writes. */
  seed: number;
  /** Bytes Smart Client writes, and the ERP. */
  clientBytes: number;
  erpBytes: number;
  /** Request-response rounds. */
  rounds: number;
  /** Largest write and read (bytes). */
  writeSize: number;
  readSize: number;
  /** Pause between reads of a slow reader (ms). */
  readPauseMs: number;
  /** For a reset: after how many bytes written. */
  resetAfter: number;
  /**
   * Request-response: Smart Client's pause before each request after the
   * first (ms), a user at work: a session that outlives resume windows.
   */
  thinkMs: number;
}

/** Draws a plan; `maxBytes` bounds each direction. */
export function planApp(rng: Rng, maxBytes: number, kind: AppKind = rng.pick(APP_KINDS)): AppPlan {
  const size = () => rng.chance(0.2) ? rng.int(0, 64) : rng.int(1, maxBytes);
  const plan: AppPlan = {
    kind,
    seed: rng.u32(),
    clientBytes: size(),
    erpBytes: size(),
    rounds: rng.int(1, 12),
    writeSize: rng.pick([1, 7, 512, 4096, 65_536, 300_000]),
    readSize: rng.pick([1, 100, 4096, 65_536]),
    readPauseMs: rng.pick([0, 1, 20, 200]),
    resetAfter: 0,
    thinkMs: 0,
  };
  if (kind === "bulk-to-erp") plan.erpBytes = 0;
  if (kind === "bulk-to-client") plan.clientBytes = 0;
  if (kind === "zero-bytes") plan.clientBytes = plan.erpBytes = 0;
  if (kind === "both-close") {
    // Small streams, so that both ends' FINs cross on the way.
    plan.clientBytes = rng.int(0, 64);
    plan.erpBytes = rng.int(0, 64);
  }
  if (kind === "request-response") {
    plan.thinkMs = rng.pick([0, 0, 0, 5_000, 30_000]);
    plan.clientBytes = Math.max(plan.rounds, Math.min(plan.clientBytes, plan.rounds * 4096));
    plan.erpBytes = Math.max(plan.rounds, plan.erpBytes);
  }
  if (kind === "client-resets") plan.resetAfter = rng.int(0, plan.clientBytes);
  if (kind === "erp-resets") plan.resetAfter = rng.int(0, plan.erpBytes);
  // Small reads and writes make a slow world; keep them for small streams.
  const total = plan.clientBytes + plan.erpBytes;
  if (total > 2_000) {
    plan.writeSize = Math.max(plan.writeSize, total > 200_000 ? 4096 : 512);
    plan.readSize = Math.max(plan.readSize, total > 200_000 ? 4096 : 512);
  }
  // A slow reader pauses at most a few hundred times.
  if (kind === "slow-reader") plan.readSize = Math.max(plan.readSize, Math.ceil(total / 300));
  return plan;
}

/** The bytes of one side's stream from `offset` on, `length` of them. */
export function streamBytes(seed: number, side: "client" | "erp", offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const salt = side === "client" ? 0x5bd1e995 : 0x27d4eb2d;
  // Blocks of 251 bytes, each from a cheap hash of (seed, side, block number).
  for (let i = 0; i < length;) {
    const at = offset + i;
    const block = Math.floor(at / 251);
    let h = Math.imul((seed ^ salt) + block, 0x9e3779b1) >>> 0;
    h ^= h >>> 15;
    const end = Math.min(length, i + 251 - (at % 251));
    for (let k = at % 251; i < end; i++, k++) out[i] = (h + k * 131) & 0xff;
  }
  return out;
}

/** What one end saw. */
export interface AppResult {
  /** Bytes read, all of them matching the other end's stream so far. */
  received: number;
  /** The first byte that did not match, if any. */
  mismatchAt: number | null;
  /** Bytes written (accepted by the transport). */
  sent: number;
  /** The end of stream was read. */
  sawEnd: boolean;
  /** The error that ended it, if any (reset, closed). */
  error: string | null;
  /** This end reset the connection on purpose. */
  resetByMe: boolean;
}

/** Bytes of the tag Smart Client writes before its stream (the session's number, for the world). */
export const TAG_BYTES = 4;

/** The tag naming session `index`. */
export function sessionTag(index: number): Uint8Array {
  const tag = new Uint8Array(TAG_BYTES);
  new DataView(tag.buffer).setUint32(0, index);
  return tag;
}

/**
 * Reads the tag at the start of an accepted connection: the session's
 * number, or null when the connection ended (or failed) before it.
 */
export async function readTag(end: Transport): Promise<number | null> {
  const tag = new Uint8Array(TAG_BYTES);
  for (let got = 0; got < TAG_BYTES;) {
    let n: number | null;
    try {
      n = await end.read(tag.subarray(got));
    } catch {
      return null;
    }
    if (n === null) return null;
    got += n;
  }
  return new DataView(tag.buffer).getUint32(0);
}

/**
 * Runs one end of `plan` on `end`. Smart Client's end writes `tag` first
 * (not counted in its stream); the ERP's end is handed the connection after
 * the world read the tag.
 */
export async function runApp(
  end: Transport,
  side: "client" | "erp",
  plan: AppPlan,
  clock: VirtualClock,
  tag?: Uint8Array,
): Promise<AppResult> {
  const other = side === "client" ? "erp" : "client";
  const toSend = side === "client" ? plan.clientBytes : plan.erpBytes;
  const expect = side === "client" ? plan.erpBytes : plan.clientBytes;
  const result: AppResult = { received: 0, mismatchAt: null, sent: 0, sawEnd: false, error: null, resetByMe: false };
  const sleep = (ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms));
  const buffer = new Uint8Array(plan.readSize);
  let nextPause = 0;

  const readSome = async (): Promise<boolean> => {
    const n = await end.read(buffer);
    if (n === null) {
      result.sawEnd = true;
      return false;
    }
    const want = streamBytes(plan.seed, other, result.received, n);
    for (let i = 0; i < n && result.mismatchAt === null; i++) {
      if (buffer[i] !== want[i]) result.mismatchAt = result.received + i;
    }
    result.received += n;
    if (plan.kind === "slow-reader" && plan.readPauseMs > 0 && result.received >= nextPause) {
      // At most about 300 pauses, however small the pieces that arrive.
      nextPause = result.received + Math.ceil(expect / 300);
      await sleep(plan.readPauseMs);
    }
    return true;
  };
  const readUntil = async (total: number) => {
    while (result.received < total) if (!await readSome()) return;
  };
  const readToEnd = async () => {
    while (await readSome()) { /* until end of stream */ }
  };
  const resetsHere = (plan.kind === "client-resets" && side === "client") ||
    (plan.kind === "erp-resets" && side === "erp");
  const write = async (upTo: number) => {
    while (result.sent < upTo) {
      if (resetsHere && result.sent >= plan.resetAfter) {
        result.resetByMe = true;
        // Closing with unread data resets; with none, make sure: read nothing, close.
        end.close();
        return;
      }
      const limit = resetsHere ? Math.max(plan.resetAfter, result.sent + 1) : upTo;
      const n = Math.min(plan.writeSize, Math.min(upTo, limit) - result.sent);
      const chunk = streamBytes(plan.seed, side, result.sent, n);
      for (let done = 0; done < n;) done += await end.write(chunk.subarray(done));
      result.sent += n;
    }
    if (resetsHere && !result.resetByMe) {
      result.resetByMe = true;
      end.close();
    }
  };

  try {
    if (tag) { for (let done = 0; done < tag.length;) done += await end.write(tag.subarray(done)); }
    switch (plan.kind) {
      case "request-response": {
        const rounds = plan.rounds;
        for (let r = 1; r <= rounds; r++) {
          const myPart = Math.floor((toSend * r) / rounds);
          const theirPart = Math.floor((expect * r) / rounds);
          if (side === "client") {
            if (r > 1 && plan.thinkMs > 0) await sleep(plan.thinkMs);
            await write(myPart);
            await readUntil(theirPart);
          } else {
            await readUntil(theirPart);
            await write(myPart);
          }
        }
        await end.closeWrite();
        await readToEnd();
        break;
      }
      case "client-writes-first":
      case "erp-writes-first": {
        const first = plan.kind === "client-writes-first" ? "client" : "erp";
        if (side === first) {
          // Everything out before reading anything...
          await write(toSend);
          await end.closeWrite();
          await readToEnd();
        } else if (plan.readSize % 2 === 0) {
          // ...against a peer that reads and writes at once (fine on TCP: a
          // broker must not stall it by not reading while the writer does not)...
          await Promise.all([
            readToEnd(),
            (async () => {
              await write(toSend);
              await end.closeWrite();
            })(),
          ]);
        } else {
          // ...or that reads everything first.
          await readToEnd();
          await write(toSend);
          await end.closeWrite();
        }
        break;
      }
      case "client-half-closes":
      case "erp-half-closes": {
        const closer = plan.kind === "client-half-closes" ? "client" : "erp";
        if (side === closer) {
          await write(toSend);
          await end.closeWrite();
          await readToEnd();
        } else {
          await Promise.all([
            readToEnd(),
            (async () => {
              await write(toSend);
              await end.closeWrite();
            })(),
          ]);
        }
        break;
      }
      default:
        // Bulk one way or both ways, slow reader, both closing at once, zero
        // bytes, resets: write and read at once (writing everything first
        // on both sides would stall on any network, brokered or not).
        await Promise.all([
          readToEnd(),
          (async () => {
            await write(toSend);
            if (!result.resetByMe) await end.closeWrite();
          })(),
        ]);
    }
  } catch (err) {
    result.error = `${(err as Error).name}: ${(err as Error).message}`;
  } finally {
    if (!result.resetByMe) {
      try {
        end.close();
      } catch { /* closed already */ }
    }
  }
  return result;
}

/** What went wrong between two ends' results, given that neither side's network failed; empty when all is well. */
export function checkPair(plan: AppPlan, client: AppResult, erp: AppResult): string[] {
  const problems: string[] = [];
  for (const [name, r] of [["Smart Client", client], ["ERP", erp]] as const) {
    if (r.mismatchAt !== null) problems.push(`${name} read a wrong byte at offset ${r.mismatchAt}`);
  }
  const reset = client.resetByMe || erp.resetByMe;
  if (reset) {
    // An application reset may cut the other stream short: a prefix is right, more is not.
    if (client.received > plan.erpBytes) {
      problems.push(`Smart Client read ${client.received} of ${plan.erpBytes} bytes`);
    }
    if (erp.received > plan.clientBytes) problems.push(`ERP read ${erp.received} of ${plan.clientBytes} bytes`);
    return problems;
  }
  if (client.error) problems.push(`Smart Client failed: ${client.error}`);
  if (erp.error) problems.push(`ERP failed: ${erp.error}`);
  if (client.received !== plan.erpBytes) {
    problems.push(`Smart Client read ${client.received} of ${plan.erpBytes} bytes`);
  }
  if (erp.received !== plan.clientBytes) problems.push(`ERP read ${erp.received} of ${plan.clientBytes} bytes`);
  if (!client.sawEnd) problems.push("Smart Client never saw the end of stream");
  if (!erp.sawEnd) problems.push("ERP never saw the end of stream");
  return problems;
}

/** A one-line description of a plan, for traces. */
export function describePlan(plan: AppPlan): string {
  return `${plan.kind}: ${plan.clientBytes} B from Smart Client, ${plan.erpBytes} B from the ERP, writes of ${plan.writeSize}, reads of ${plan.readSize}${
    plan.kind === "request-response" ? `, ${plan.rounds} rounds${plan.thinkMs ? `, ${plan.thinkMs} ms apart` : ""}` : ""
  }${plan.kind.endsWith("resets") ? `, reset after ${plan.resetAfter} B` : ""}`;
}

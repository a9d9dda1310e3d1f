/**
 * Carrying a client's link to the broker-server that holds its session:
 * bytes are copied both ways unchanged (the holder runs the handshake and
 * the session; this side only splices). Read buffers follow the traffic
 * (ReadSizer), so that thousands of idle relayed links hold 2 KiB each.
 * @module
 */

import { ReadSizer } from "../session/link.ts";
import { closeQuietly, type Transport, writeAll } from "../session/transport.ts";

/** Largest read buffer of a relay direction. */
const MAX_RELAY_READ = 64 * 1024;

/** Bytes a relay carried each way. */
export interface RelayCounts {
  /** From the client to the holder. */
  toHolder: number;
  /** From the holder to the client. */
  toClient: number;
}

/** Copies `from` to `to` until `from` ends (then half-closes `to`); adds what it copied to `count`. */
async function copy(from: Transport, to: Transport, count: (n: number) => void): Promise<void> {
  const sizer = new ReadSizer(MAX_RELAY_READ);
  let buffer = new Uint8Array(sizer.size);
  for (;;) {
    const n = await from.read(buffer);
    if (n === null) break;
    await writeAll(to, buffer.subarray(0, n));
    count(n);
    if (sizer.update(n) !== buffer.length) buffer = new Uint8Array(sizer.size);
  }
  await to.closeWrite();
}

/** After one direction has ended, the other gets this long to finish before both are closed (ms). */
export const RELAY_LINGER_MS = 2_000;

/**
 * Splices `client` and `holder` until both directions have ended, or either
 * fails (then both are closed at once, as a cut link would be). The link
 * protocol never half-closes: once either side has ended its direction
 * (the holder closed the link, or the client went away), the other gets
 * RELAY_LINGER_MS to finish, and then both are closed, so that no relay
 * outlives its link. `counts` grows as bytes pass.
 */
export async function splice(client: Transport, holder: Transport, counts: RelayCounts): Promise<void> {
  const closeBoth = () => {
    closeQuietly(client);
    closeQuietly(holder);
  };
  let linger: ReturnType<typeof setTimeout> | undefined;
  const ended = () => linger ??= setTimeout(closeBoth, RELAY_LINGER_MS);
  const direction = (from: Transport, to: Transport, count: (n: number) => void) =>
    copy(from, to, count).then(ended, (err) => {
      closeBoth();
      throw err;
    });
  try {
    await Promise.all([
      direction(client, holder, (n) => counts.toHolder += n),
      direction(holder, client, (n) => counts.toClient += n),
    ]);
  } catch {
    // A cut on either side ends the relay, as it would end a direct link.
  } finally {
    clearTimeout(linger);
    closeBoth();
  }
}

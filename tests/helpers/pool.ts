/**
 * Helpers for tests of pooled buffers and of scripted transports.
 * @module
 */

import { readBufferPool } from "../../src/session/buffer_pool.ts";

/** Fills every buffer handed back to the shared pool with 0xEE (so a view still in use sees it); returns the undo. */
export function poisonOnGive(): () => void {
  const give = readBufferPool.give;
  readBufferPool.give = function (buffer: Uint8Array) {
    buffer.fill(0xee);
    give.call(this, buffer);
  };
  return () => readBufferPool.give = give;
}

/** Moves as many bytes as fit into `p` from the front of `chunks` (from as many chunks as wait); returns the count. */
export function takeChunks(chunks: Uint8Array[], p: Uint8Array): number {
  let n = 0;
  while (chunks.length > 0 && n < p.length) {
    const c = chunks[0] as Uint8Array;
    const k = Math.min(p.length - n, c.length);
    p.set(c.subarray(0, k), n);
    n += k;
    if (k < c.length) chunks[0] = c.subarray(k);
    else chunks.shift();
  }
  return n;
}

/**
 * A transparent TCP relay that records every byte it carries, per connection
 * and direction. Put in front of a TLS peer, it lets a test say where an
 * opaque stream went wrong: TLS only says "cannot decrypt", the recordings
 * say at which byte the two ends first disagree.
 * @module
 */

import { closeQuietly, writeAll } from "../../src/session/transport.ts";

/** The bytes one relayed connection carried. */
export interface TapRecording {
  /** From the connecting side toward the target. */
  toTarget: Uint8Array[];
  /** From the target back to the connecting side. */
  fromTarget: Uint8Array[];
  /** How each direction ended so far ("FIN passed on", or the error), for reports. */
  ends: { toTarget?: string; fromTarget?: string };
}

/** A recording relay on 127.0.0.1 (port 0) in front of `127.0.0.1:<target>`. */
export class Tap {
  /** One recording per accepted connection, in order. */
  readonly connections: TapRecording[] = [];
  #listener: Deno.TcpListener;
  #conns = new Set<Deno.Conn>();
  #loop: Promise<void>;

  /** Starts relaying to `targetPort`. */
  constructor(targetPort: number) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#loop = this.#accept(targetPort);
  }

  /** Where to connect instead of the target. */
  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  async #accept(targetPort: number): Promise<void> {
    for (;;) {
      const front = await this.#listener.accept().catch(() => null);
      if (!front) return;
      const recording: TapRecording = { toTarget: [], fromTarget: [], ends: {} };
      this.connections.push(recording);
      this.#conns.add(front);
      const back = await Deno.connect({ hostname: "127.0.0.1", port: targetPort }).catch(() => null);
      if (!back) {
        this.#conns.delete(front);
        closeQuietly(front);
        continue;
      }
      this.#conns.add(back);
      // Each direction ends on its own (a half-close is passed on as one);
      // both sockets close once neither direction carries anything more.
      Promise.all([this.#relay(front, back, recording, "toTarget"), this.#relay(back, front, recording, "fromTarget")])
        .then(() => {
          for (const conn of [front, back]) {
            this.#conns.delete(conn);
            closeQuietly(conn);
          }
        });
    }
  }

  /** Carries one direction; records what was delivered (written to `to`). */
  async #relay(
    from: Deno.Conn,
    to: Deno.Conn,
    recording: TapRecording,
    direction: "toTarget" | "fromTarget",
  ): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        const chunk = buf.slice(0, n);
        await writeAll(to, chunk);
        recording[direction].push(chunk);
      }
      await to.closeWrite();
      recording.ends[direction] = "FIN passed on";
    } catch (err) {
      // A reset or a closed socket ends this direction; the other one ends by itself.
      recording.ends[direction] = String(err);
    }
  }

  /** Stops listening and closes every relayed connection. */
  async close(): Promise<void> {
    this.#listener.close();
    await this.#loop;
    for (const conn of this.#conns) closeQuietly(conn);
  }
}

/** Bytes in a recording's direction. */
export function byteCount(chunks: Uint8Array[]): number {
  return chunks.reduce((n, c) => n + c.length, 0);
}

/**
 * Compares what one end sent with what the other received: "identical", or
 * where they first differ and the bytes around that point (hex).
 */
export function compareStreams(sent: Uint8Array, received: Uint8Array): string {
  const common = Math.min(sent.length, received.length);
  let at = 0;
  while (at < common && sent[at] === received[at]) at++;
  if (at === common && sent.length === received.length) return `identical (${sent.length} bytes)`;
  const hex = (b: Uint8Array) => [...b.subarray(at, at + 16)].map((x) => x.toString(16).padStart(2, "0")).join("");
  if (at === common) {
    return received.length < sent.length
      ? `${received.length} of ${sent.length} bytes received, all of them right`
      : `${received.length} bytes received of ${sent.length} sent: the first ${sent.length} right, then extra bytes`;
  }
  // Where else do the received bytes at the difference appear in what was sent (a replay from the wrong offset)?
  const probe = received.subarray(at, at + 16);
  let elsewhere = -1;
  if (probe.length === 16) {
    search: for (let i = 0; i + 16 <= sent.length; i++) {
      for (let j = 0; j < 16; j++) if (sent[i + j] !== probe[j]) continue search;
      elsewhere = i;
      break;
    }
  }
  return `${received.length} bytes received of ${sent.length} sent; first difference at byte ${at}: sent ${
    hex(sent)
  }, received ${hex(received)}${elsewhere >= 0 ? ` (the received bytes were sent at byte ${elsewhere})` : ""}`;
}

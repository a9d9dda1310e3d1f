/**
 * broker-client's TLS dialer for the link, on node:tls because it can both
 * trust a CA file and pin the server certificate's SHA-256 fingerprint
 * (Deno.connectTls cannot show the peer certificate). The socket is adapted
 * to the Transport interface the session code uses.
 * @module
 */

import tls from "node:tls";
import type { ClientTls } from "../config/security.ts";
import type { Transport } from "./transport.ts";

/**
 * The broker server's certificate is not the one we trust (untrusted issuer
 * or pin mismatch): retrying will not help, and it may be an impostor.
 */
export class TlsTrustError extends Error {
  override name = "TlsTrustError";
}

/** Stop reading the socket while this much is buffered unread. */
const HIGH_WATER = 1024 * 1024;

/** A node:net/tls socket seen as a Transport. */
export class NodeSocketTransport implements Transport {
  #socket: tls.TLSSocket;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;

  /** Wraps a connected socket. */
  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered >= HIGH_WATER) socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (err: Error) => {
      this.#error = err;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  /**
   * This end's address (broker-client's address check needs it: a TLS link
   * made from an address that went away is raced at once too).
   */
  get localAddr(): Deno.NetAddr {
    return { transport: "tcp", hostname: this.#socket.localAddress ?? "", port: this.#socket.localPort ?? 0 };
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** Reads into `p`: a count, or null at end of stream. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    const chunk = this.#chunks[0] as Uint8Array;
    const n = Math.min(p.length, chunk.length);
    p.set(chunk.subarray(0, n));
    if (n === chunk.length) this.#chunks.shift();
    else this.#chunks[0] = chunk.subarray(n);
    this.#buffered -= n;
    if (this.#buffered < HIGH_WATER / 2 && this.#socket.isPaused()) this.#socket.resume();
    return n;
  }

  /** Writes all of `p`; resolves when the socket took it. */
  write(p: Uint8Array): Promise<number> {
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#socket.write(p, (err) => err ? reject(err) : resolve(p.length));
    });
  }

  /** Half-closes. */
  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(() => resolve()));
  }

  /**
   * Closes: what was written still goes out (a final ABORT or CLOSE must
   * reach the peer), and the socket is destroyed once it has, or after 2 s.
   */
  close(): void {
    if (this.#ended && this.#socket.destroyed) return;
    this.#ended = true;
    this.#notify();
    if (this.#socket.destroyed) return;
    const timer = setTimeout(() => this.#socket.destroy(), 2_000);
    this.#socket.once("close", () => clearTimeout(timer));
    this.#socket.end();
  }
}

/** Options of dialTls. */
export interface TlsDialOptions {
  /** Give up after this long (ms). */
  timeoutMs: number;
  /** Give up when the TCP connect takes longer than this (ms); default timeoutMs. */
  connectTimeoutMs?: number;
  /** Abort early. */
  signal?: AbortSignal;
}

/**
 * Connects with TLS: trusts `settings.caFile` (or the system's CAs) and, with
 * a fingerprint, accepts exactly the pinned certificate. Errors say plainly
 * which check failed.
 */
export async function dialTls(
  hostname: string,
  port: number,
  settings: ClientTls,
  options: TlsDialOptions,
): Promise<Transport> {
  const where = hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
  const ca = settings.caFile ? [await Deno.readTextFile(settings.caFile)] : undefined;
  return await new Promise<Transport>((resolve, reject) => {
    const socket = tls.connect({
      host: hostname,
      port,
      servername: /^[\d.]+$|:/.test(hostname) ? undefined : hostname,
      ...(ca ? { ca } : {}),
      // A pinned certificate is checked below, whoever issued it.
      rejectUnauthorized: settings.fingerprint === null,
    });
    const fail = (message: string, trust = false) => {
      cleanup();
      socket.destroy();
      const text = `Cannot connect to ${where} over TLS: ${message}`;
      reject(trust ? new TlsTrustError(text) : new Error(text));
    };
    const started = Date.now();
    const connectMs = Math.min(options.connectTimeoutMs ?? options.timeoutMs, options.timeoutMs);
    let timer = setTimeout(() => fail(`no answer within ${connectMs} ms`), connectMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      const left = Math.max(1, options.timeoutMs - (Date.now() - started));
      timer = setTimeout(() => fail(`no TLS handshake within ${options.timeoutMs} ms`), left);
    });
    const onAbort = () => fail("cancelled");
    if (options.signal?.aborted) queueMicrotask(onAbort);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const cleanup = () => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      socket.removeAllListeners("secureConnect");
      socket.removeAllListeners("connect");
      socket.removeAllListeners("error");
    };
    socket.once("error", (err: Error & { code?: string }) => {
      const { message, trust } = describeTlsError(err);
      fail(message, trust);
    });
    socket.once("secureConnect", () => {
      const mismatch = fingerprintMismatch(socket.getPeerCertificate()?.fingerprint256, settings.fingerprint);
      if (mismatch) {
        fail(mismatch, true);
        return;
      }
      cleanup();
      socket.setNoDelay(true);
      resolve(new NodeSocketTransport(socket));
    });
  });
}

/** What a failed TLS dial says, and whether it is about trust (the certificate) rather than the network. */
function describeTlsError(err: Error & { code?: string }): { message: string; trust: boolean } {
  const text = `${err.code ?? ""} ${err.message}`;
  if (/certificate|self.signed|verify|CERT_|issuer/i.test(text)) {
    return {
      message:
        `the broker server's certificate is not trusted (${err.message}): check LINK_TLS_CA, or pin it with LINK_TLS_FINGERPRINT`,
      trust: true,
    };
  }
  if (/ECONNRESET|EPIPE|socket disconnected|wrong version|packet length/i.test(text)) {
    return {
      message: `the TLS handshake failed (${err.message}): does the broker server use LINK_TLS_CERT and LINK_TLS_KEY?`,
      trust: false,
    };
  }
  return { message: err.message, trust: false };
}

/** Why the certificate `seen` (its SHA-256 fingerprint) is not the `pinned` one, or null when it is (or nothing is pinned). */
function fingerprintMismatch(seen: string | undefined, pinned: string | null): string | null {
  if (!pinned) return null;
  const got = (seen ?? "").toUpperCase();
  if (got === pinned) return null;
  return `the broker server's certificate has fingerprint ${got || "(none)"}, not the pinned ${pinned}`;
}

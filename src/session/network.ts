/**
 * The network the brokers listen and dial on. Production code uses
 * `systemNetwork` (Deno's sockets); the simulation tests (tests/sim/) pass
 * an in-memory network on a virtual clock. Only what the brokers use is
 * here: a connection is a Transport with its addresses, a listener accepts
 * them, and dialing plain TCP takes a timeout and a signal.
 * @module
 */

import { type DialOptions, dialTcp, type Transport } from "./transport.ts";

/** An open connection: Deno.TcpConn and Deno.TlsConn fit. */
export interface NetConn extends Transport {
  /** The peer's address. */
  readonly remoteAddr: Deno.Addr;
  /** This end's address. */
  readonly localAddr: Deno.Addr;
}

/** An accepting socket: Deno.Listener fits. */
export interface NetListener<C extends NetConn = NetConn> {
  /** Where it listens. */
  readonly addr: Deno.Addr;
  /** The next connection; rejects once the listener is closed. */
  accept(): Promise<C>;
  /** Stops listening. */
  close(): void;
}

/** Options of Network.listen. */
export interface ListenOptions {
  hostname: string;
  port: number;
  /** PEM certificate and key: the listener speaks TLS. */
  tls?: { cert: string; key: string };
}

/** Listening and dialing. */
export interface Network {
  /** Listens on a TCP address (TLS with `tls`); throws as Deno.listen does (e.g. AddrInUse). */
  listen(options: ListenOptions): NetListener;
  /** Dials a TCP address; errors say which address and why (see dialTcp). */
  dial(hostname: string, port: number, options: DialOptions): Promise<NetConn>;
  /** This machine's addresses now (throws without the permission to list them). */
  addresses(): string[];
}

/** Deno's sockets. */
export const systemNetwork: Network = {
  listen: ({ hostname, port, tls }) =>
    tls
      ? Deno.listenTls({ hostname, port, transport: "tcp", cert: tls.cert, key: tls.key })
      : Deno.listen({ hostname, port, transport: "tcp" }),
  dial: (hostname, port, options) => dialTcp(hostname, port, options),
  addresses: () => Deno.networkInterfaces().map((i) => i.address),
};

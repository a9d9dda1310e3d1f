/**
 * Stand-ins built on node:net, for tests that need what Deno's sockets
 * cannot do: reset a connection (RST) instead of closing it.
 * @module
 */

import net from "node:net";
import { equal } from "node:assert/strict";

/** Connects to 127.0.0.1:`port` with a socket that can be reset (resetAndDestroy). */
export async function connectResettable(port: number): Promise<net.Socket> {
  const app = net.connect({ host: "127.0.0.1", port, noDelay: true });
  app.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    app.once("connect", resolve);
    app.once("error", reject);
  });
  return app;
}

/** A Smart Client stand-in through broker-client at `port` that can reset; its session is checked to carry data. */
export async function connectResettableApp(port: number): Promise<net.Socket> {
  const app = await connectResettable(port);
  const echoed = new Promise<string>((resolve) =>
    app.once("data", (b: Uint8Array) => resolve(new TextDecoder().decode(b)))
  );
  app.write("hello");
  equal(await echoed, "hello");
  return app;
}

/** An echoing ERP stand-in on 127.0.0.1 whose connections can be reset. */
export interface ResettableErp extends AsyncDisposable {
  port: number;
  /** Its connections, in the order they came. */
  sockets: net.Socket[];
}

/** Starts a ResettableErp; dispose of it with `await using`. */
export async function startResettableErp(): Promise<ResettableErp> {
  const sockets: net.Socket[] = [];
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => {});
    sockets.push(socket);
    socket.on("data", (b: Uint8Array) => socket.write(b));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    sockets,
    [Symbol.asyncDispose]: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

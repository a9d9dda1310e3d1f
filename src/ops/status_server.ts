/**
 * The status HTTP listener of both programs, on Deno.serve: `/` (HTML;
 * broker-server's with a session filter in the query string),
 * `/status.json` and, for broker-server, `/history.json` (the last 24 hours)
 * and `/metrics` (Prometheus). Bound to
 * the loopback unless configured otherwise (broker-client: always); beyond
 * it an access key is required (Bearer token, Basic auth password, or
 * `?key=`), and refused requests get a bare 401. Without a key, only
 * requests naming a loopback host are answered, so a web page cannot read
 * the status through DNS rebinding (a hostile name that resolves to
 * 127.0.0.1 in the administrator's browser).
 * @module
 */

import { formatHostPort, type HostPort } from "../config/values.ts";
import { logger } from "./log.ts";
import type { RenderHtmlOptions } from "./status_render.ts";

const log = logger("status");

/** What a status listener serves, rendered afresh for each request. */
export interface StatusPages {
  /**
   * The HTML page; `options.linkKey`: the `?key=` it was opened with, for
   * its links; `query`: the request's query string (e.g. a filter).
   */
  html(options: Pick<RenderHtmlOptions, "linkKey">, query: URLSearchParams): string;
  /** The content of status.json. */
  json(): unknown;
  /** The content of history.json; without it, /history.json is not found. */
  history?(): unknown;
  /** The Prometheus text of /metrics; without it, /metrics is not found. */
  metrics?(): string;
}

/** Options of the status listener. */
export interface StatusServerOptions {
  /** Address and port (0 for any free port). */
  listen: HostPort;
  /** Required access key, or null when open (loopback). */
  accessKey: string | null;
  /** What it serves. */
  pages: StatusPages;
}

/** A running status listener. */
export interface StatusServer {
  /** Where it listens. */
  address: HostPort;
  /** Requires `key` from the next request on (null: none, on the loopback only). */
  setAccessKey(key: string | null): void;
  /** Stops it. */
  shutdown(): Promise<void>;
}

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** Compares two secrets without leaking, through timing, how much of them matched. */
async function sameSecret(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([digest(given), digest(expected)]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}

/** The key a request presents: Bearer token, Basic password, or `?key=`. */
export function presentedKey(request: Request): string | null {
  const auth = request.headers.get("authorization") ?? "";
  if (/^bearer /i.test(auth)) return auth.slice(7).trim();
  if (/^basic /i.test(auth)) {
    try {
      const decoded = atob(auth.slice(6).trim());
      return decoded.slice(decoded.indexOf(":") + 1);
    } catch {
      return null;
    }
  }
  return new URL(request.url).searchParams.get("key");
}

/** The host name of a Host header value ("name", "name:port", "[v6]:port"), lowercased, without a final dot. */
function hostName(host: string): string {
  const value = host.trim().toLowerCase();
  const name = value.startsWith("[") ? value.slice(1, value.indexOf("]")) : value.replace(/:\d*$/, "");
  return name.replace(/\.$/, "");
}

/**
 * True when `host` (a Host header) names the loopback: `localhost` (and
 * `*.localhost`, which browsers keep on the loopback), 127.x.x.x, `::1`, or
 * `configured` (STATUS_ADDRESS as written).
 */
export function isLoopbackHost(host: string, configured: string): boolean {
  const name = hostName(host);
  return name === "localhost" || name.endsWith(".localhost") || /^127(\.\d{1,3}){3}$/.test(name) ||
    name === "::1" || name === hostName(configured.includes(":") ? `[${configured}]` : configured);
}

/** Handles one request (exported for tests without a socket). */
export async function handleStatusRequest(request: Request, options: StatusServerOptions): Promise<Response> {
  if (options.accessKey === null) {
    const host = request.headers.get("host");
    if (host !== null && !isLoopbackHost(host, options.listen.hostname)) {
      return new Response("Forbidden: without STATUS_ACCESS_KEY the status page answers only to a loopback name\n", {
        status: 403,
        headers: { "content-type": "text/plain" },
      });
    }
  } else {
    const key = presentedKey(request);
    if (key === null || !await sameSecret(key, options.accessKey)) {
      return new Response("Unauthorized\n", {
        status: 401,
        headers: { "www-authenticate": 'Basic realm="broker-server"', "content-type": "text/plain" },
      });
    }
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("Method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  const url = new URL(request.url);
  const noStore = { "cache-control": "no-store" };
  const json = (value: unknown) =>
    new Response(JSON.stringify(value, null, 2), { headers: { ...noStore, "content-type": "application/json" } });
  const pages = options.pages;
  switch (url.pathname) {
    case "/":
    case "/index.html": {
      // A page opened with ?key= keeps it in its links (the header ways need no help).
      const linkKey = options.accessKey !== null && !request.headers.has("authorization")
        ? url.searchParams.get("key")
        : null;
      return new Response(pages.html({ linkKey }, url.searchParams), {
        headers: { ...noStore, "content-type": "text/html; charset=utf-8" },
      });
    }
    case "/status.json":
      return json(pages.json());
    case "/history.json":
      if (pages.history) return json(pages.history());
      break;
    case "/metrics":
      if (pages.metrics) {
        return new Response(pages.metrics(), {
          headers: { ...noStore, "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      }
      break;
  }
  return new Response("Not found\n", { status: 404, headers: { "content-type": "text/plain" } });
}

/** Starts the status listener; throws with a clear message when the port is taken. */
export function startStatusServer(options: StatusServerOptions): StatusServer {
  const live = { ...options };
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve(
      { hostname: options.listen.hostname, port: options.listen.port, onListen: () => {} },
      (request) => handleStatusRequest(request, live),
    );
  } catch (err) {
    throw new Error(
      `Cannot listen for the status page on ${formatHostPort(options.listen)}: ${
        err instanceof Deno.errors.AddrInUse ? "another program already uses this port" : (err as Error).message
      }`,
    );
  }
  const address = { hostname: server.addr.hostname, port: server.addr.port };
  log.info("Status page on http://{address}/ (also /status.json{more}){auth}", {
    address: formatHostPort(address),
    more: `${options.pages.history ? ", /history.json" : ""}${options.pages.metrics ? " and /metrics" : ""}`,
    auth: options.accessKey ? ", access key required" : "",
  });
  return {
    address,
    setAccessKey(key) {
      live.accessKey = key;
    },
    shutdown: () => server.shutdown(),
  };
}

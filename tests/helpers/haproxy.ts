/**
 * Debian's HAProxy for tests: where it is, why it cannot run here, and a
 * load balancer (mode tcp, round robin, TCP health checks) in front of
 * broker-servers on 127.0.0.1, as a child process.
 * @module
 */

import { join } from "node:path";
import { freePort } from "./apps.ts";
import { waitFor } from "./setup.ts";

/** The haproxy binary: on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH). */
async function findHaproxy(): Promise<string | null> {
  for (const candidate of ["haproxy", "/usr/sbin/haproxy"]) {
    try {
      await new Deno.Command(candidate, { args: ["-v"], stdout: "null", stderr: "null" }).output();
      return candidate;
    } catch { /* not this one */ }
  }
  return null;
}

/** The haproxy command, or null (see haproxyUnavailable for why). */
export const HAPROXY: string | null = Deno.build.os === "windows" ? null : await findHaproxy();

/** Why HAProxy tests cannot run here, or null. */
export function haproxyUnavailable(): string | null {
  if (Deno.build.os === "windows") return "HAProxy is a Linux program here (this run is on Windows or under Wine)";
  if (!HAPROXY) return "haproxy is not installed (Debian: apt-get install haproxy)";
  return null;
}

/** HAProxy as a child process: the port it balances on, what it printed, and a wait for a message of it. */
export interface Haproxy extends AsyncDisposable {
  port: number;
  output(): string;
  /** Resolves once HAProxy has printed text matching `pattern` (e.g. /b1 is DOWN/). */
  waitFor(pattern: RegExp, ms?: number): Promise<void>;
}

/**
 * Starts HAProxy (`-db`: foreground, its messages on stderr) on a free
 * loopback port, balancing round robin without affinity over the
 * broker-servers at `ports` (named b0, b1, ... in its messages), each with a
 * TCP health check every 200 ms that takes it out at the first failure.
 */
export async function startHaproxy(ports: number[]): Promise<Haproxy> {
  if (!HAPROXY) throw new Error(haproxyUnavailable() ?? "no haproxy");
  const dir = await Deno.makeTempDir({ prefix: "cluster-haproxy-" });
  const port = freePort();
  const cfg = join(dir, "haproxy.cfg");
  await Deno.writeTextFile(
    cfg,
    [
      "global",
      "  maxconn 2000",
      "defaults",
      "  mode tcp",
      "  timeout connect 2s",
      "  timeout client 1h",
      "  timeout server 1h",
      "  retries 2",
      "  option redispatch",
      "frontend links",
      `  bind 127.0.0.1:${port}`,
      "  default_backend brokers",
      "backend brokers",
      "  balance roundrobin",
      ...ports.map((p, i) => `  server b${i} 127.0.0.1:${p} check inter 200 fall 1 rise 1`),
      "",
    ].join("\n"),
  );
  const child = new Deno.Command(HAPROXY, {
    args: ["-db", "-f", cfg],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      for (const w of [...waiters]) {
        if (w.pattern.test(text)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const haproxy: Haproxy = {
    port,
    output: () => text,
    waitFor(pattern, ms = 10_000) {
      if (pattern.test(text)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`HAProxy printed nothing matching ${pattern} within ${ms} ms:\n${text}`)),
          ms,
        );
        waiters.push({
          pattern,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    },
    async [Symbol.asyncDispose]() {
      if (!exited) child.kill("SIGTERM");
      await status;
      await pumps;
      await Deno.remove(dir, { recursive: true });
    },
  };
  // Ready once its port is taken (by it: it exits when it cannot bind).
  try {
    await waitFor(() => {
      if (exited) throw new Error(`haproxy exited at start:\n${text}`);
      return bound(port);
    }, "HAProxy to listen");
  } catch (err) {
    await haproxy[Symbol.asyncDispose]();
    throw err;
  }
  return haproxy;
}

/** Whether something listens on 127.0.0.1:port, found without connecting to it (binding fails). */
function bound(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return false;
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) return true;
    throw err;
  }
}

/** Runs `haproxy -c -f file`: whether the file parses, and what HAProxy said. */
export async function checkHaproxyConfig(file: string): Promise<{ ok: boolean; output: string }> {
  if (!HAPROXY) throw new Error(haproxyUnavailable() ?? "no haproxy");
  const out = await new Deno.Command(HAPROXY, { args: ["-c", "-f", file], stdout: "piped", stderr: "piped" }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { ok: out.success, output: decode(out.stdout) + decode(out.stderr) };
}

/**
 * broker-server as a child process (`deno run server.ts`), with its console
 * output collected line by line so that tests can wait for what it says.
 * @module
 */

/** A running broker-server process and what it has printed. */
export interface ServerProcess {
  child: Deno.ChildProcess;
  /** Every line printed so far (stdout and stderr). */
  lines: string[];
  /** Resolves with the first line (printed so far or later) that matches. */
  waitFor(pattern: RegExp, ms?: number): Promise<string>;
  /** Resolves once the output has ended (the process exited). */
  done: Promise<void>;
}

/** Starts broker-server with `configPath` (and `extra` arguments). */
export function startServerProcess(configPath: string, extra: string[] = []): ServerProcess {
  const entry = new URL("../../server.ts", import.meta.url).pathname.replace(/^\/([A-Za-z]:)/, "$1");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry, "--config", configPath, ...extra],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split(/\r?\n/);
      rest = parts.pop() ?? "";
      for (const line of parts) {
        lines.push(line);
        for (const w of [...waiters]) {
          if (!w.pattern.test(line)) continue;
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
    if (rest) lines.push(rest);
  };
  const done = Promise.all([collect(child.stdout), collect(child.stderr)]).then(() => {});
  const waitFor = (pattern: RegExp, ms = 20_000) => {
    const found = lines.find((l) => pattern.test(l));
    if (found) return Promise.resolve(found);
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        reject(
          new Error(`broker-server (pid ${child.pid}) did not print ${pattern} within ${ms} ms:\n${lines.join("\n")}`),
        );
      }, ms);
      const waiter = {
        pattern,
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      waiters.push(waiter);
    });
  };
  return { child, lines, waitFor, done };
}

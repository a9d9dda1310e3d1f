/**
 * broker-client (the real program, as a child process) whose log file cannot
 * be opened: the default log sits beside smartclient.ini, which desktop users
 * often cannot write (Program Files). It logs into a per-user folder instead,
 * or to the console alone, says so, and carries Smart Client's traffic either
 * way.
 */
import { equal, match, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { echo, freePort, roundTrip } from "../helpers/apps.ts";
import { serverConfig, startErp, startServer } from "../helpers/setup.ts";

const windows = Deno.build.os === "windows";

/**
 * Makes the log file beside smartclient.ini in `dir` impossible to open, the
 * most realistic way this process allows: the folder read-only, as Program
 * Files is for a desktop user (not for root, nor on Windows, where read-only
 * folders still take new files); else a folder where the log file should be
 * (root on Linux); else (Windows, where a folder opens for writing and only
 * the writes fail) LOG_FILE under a regular file. `writeConfig` writes
 * smartclient.ini with the given extra lines. Returns how, for the test's
 * output.
 */
async function blockDefaultLog(dir: string, writeConfig: (extra: string[]) => Promise<void>): Promise<string> {
  if (windows) {
    await Deno.writeTextFile(join(dir, "blocker"), "a file where the log folder should be");
    await writeConfig(["LOG_FILE=blocker\\broker-client.log"]);
    return "LOG_FILE under a regular file";
  }
  await writeConfig([]);
  await Deno.chmod(dir, 0o555);
  try {
    await Deno.writeTextFile(join(dir, "probe"), "");
    await Deno.remove(join(dir, "probe"));
  } catch (err) {
    if (err instanceof Deno.errors.PermissionDenied) return "read-only folder";
    throw err;
  }
  await Deno.chmod(dir, 0o755);
  await Deno.mkdir(join(dir, "broker-client.log"));
  return "a folder named broker-client.log (a read-only folder does not stop this user)";
}

/** Deno's cache folder, kept for the child whose HOME and LOCALAPPDATA (where Deno looks by default) the test moves. */
async function denoDir(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped", stderr: "null" })
    .output();
  return JSON.parse(new TextDecoder().decode(out.stdout)).denoDir;
}

/** Starts broker-client and collects everything it prints (stdout and stderr). */
function startClientProcess(configPath: string, env: Record<string, string>) {
  const entry = fileURLToPath(new URL("../../client.ts", import.meta.url));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry, "--config", configPath, "--console"],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  let changed: () => void = () => {};
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      output += text;
      changed();
    }
  };
  const streams = Promise.all([collect(child.stdout), collect(child.stderr)]);
  return {
    child,
    get output() {
      return output;
    },
    /** Resolves once the output matches `pattern`; rejects if the program ends first. */
    async printed(pattern: RegExp): Promise<void> {
      while (!pattern.test(output)) {
        const more = new Promise<void>((resolve) => changed = resolve);
        const ended = streams.then(() => "ended" as const);
        if (await Promise.race([more, ended]) === "ended" && !pattern.test(output)) {
          throw new Error(`broker-client ended without printing ${pattern}:\n${output}`);
        }
      }
    },
    async stop(): Promise<Deno.CommandStatus> {
      try {
        child.kill("SIGTERM");
      } catch {
        // It ended already.
      }
      const status = await child.status;
      await streams;
      return status;
    },
  };
}

for (const perUserWorks of [true, false]) {
  Deno.test(
    perUserWorks
      ? "broker-client logs into the per-user folder when the log beside smartclient.ini cannot be opened, and says so"
      : "broker-client runs with console logging only when no log file can be opened",
    async () => {
      await using erp = startErp(echo);
      await using server = startServer(serverConfig([erp.port]));
      const base = await Deno.makeTempDir();
      const iniDir = join(base, "SmartClient");
      await Deno.mkdir(iniDir);
      const port = freePort();
      const configPath = join(iniDir, "smartclient.ini");
      const how = await blockDefaultLog(iniDir, (extra) =>
        Deno.writeTextFile(
          configPath,
          [
            "[drivers]",
            "active=com_broker",
            "[com_broker]",
            "server=127.0.0.1",
            `port=${port}`,
            "BrokerProxy=1",
            `BrokerServer=127.0.0.1:${server.address.port}`,
            ...extra,
          ].join("\r\n"),
        ));
      console.log(`The log beside smartclient.ini is blocked by: ${how}`);
      // The per-user folders for program state: real folders, or (when they must fail too) paths under a regular
      // file. The home folder stays a real one: Deno itself reads ~/.npmrc.
      const userRoot = join(base, "user");
      if (perUserWorks) await Deno.mkdir(userRoot);
      else await Deno.writeTextFile(userRoot, "a file where the user's folders should be");
      const home = join(base, "home");
      await Deno.mkdir(home);
      const env = {
        HOME: home,
        USERPROFILE: home,
        XDG_STATE_HOME: join(userRoot, "state"),
        LOCALAPPDATA: join(userRoot, "AppData", "Local"),
        DENO_DIR: await denoDir(),
        NO_COLOR: "1",
      };
      const fallback = windows
        ? join(env.LOCALAPPDATA, "protheus-broker", "broker-client.log")
        : join(env.XDG_STATE_HOME, "protheus-broker", "broker-client.log");

      const client = startClientProcess(configPath, env);
      let status: Deno.CommandStatus;
      try {
        await client.printed(/listening on/);
        const app = await Deno.connect({ hostname: "127.0.0.1", port });
        equal(await roundTrip(app, "through a client without its log file"), "through a client without its log file");
        app.close();
      } finally {
        status = await client.stop();
      }
      // SIGTERM is a graceful stop on Linux; on Windows it ends the process outright.
      ok(status.code === 0 || windows, `stopped: ${JSON.stringify(status)}`);
      const said = client.output;
      match(said, /Cannot open the log file ".*broker-client\.log"/);
      if (perUserWorks) {
        ok(said.includes(`logging to "${fallback}" instead`), said);
        const log = await Deno.readTextFile(fallback);
        match(log, /broker-client .* starting with .*smartclient\.ini/);
        match(
          log,
          /Cannot open the log file ".*SmartClient.*broker-client\.log"/,
          "the fallback log says why it is used",
        );
      } else {
        match(said, /logging to the console only/);
      }
      await Deno.chmod(iniDir, 0o755).catch(() => {});
      await Deno.remove(base, { recursive: true });
    },
  );
}

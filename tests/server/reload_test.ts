import { deepEqual, equal, match, ok, rejects } from "node:assert/strict";
import { loadServerConfig } from "../../src/config/server_config.ts";
import { renderHtml } from "../../src/ops/status_render.ts";
import { RELOAD_RULES, securityWeakenings, watchConfig } from "../../src/server/reload.ts";
import { BrokerServer, type BrokerServerOptions } from "../../src/server/server.ts";
import { within } from "../../src/session/transport.ts";
import { echo, freePort, roundTrip } from "../helpers/apps.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { docSection, keyItems } from "../helpers/docs.ts";
import { clientConfig, startClient, startErp, waitFor } from "../helpers/setup.ts";

Deno.test("a change to the file on disk triggers one reload after the debounce", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  await Deno.writeTextFile(path, "[A]\n");
  let reloads = 0;
  let reloaded: (() => void) | undefined;
  const done = new Promise<void>((resolve) => reloaded = resolve);
  const watcher = watchConfig(path, () => {
    reloads++;
    reloaded?.();
    return Promise.resolve();
  }, { debounceMs: 300, sighup: false });
  // Several writes in a row, as an editor does: one reload.
  await Deno.writeTextFile(path, "[A]\nx=1\n");
  await Deno.writeTextFile(path, "[A]\nx=2\n");
  await Deno.writeTextFile(`${dir}/other.ini`, "unrelated");
  ok(await within(done, 2_000), "reloaded");
  await new Promise((r) => setTimeout(r, 600)); // no second reload follows
  equal(reloads, 1);
  await watcher.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name: "SIGHUP triggers a reload",
  ignore: Deno.build.os === "windows",
  async fn() {
    const dir = await Deno.makeTempDir();
    let reloaded: (() => void) | undefined;
    const done = new Promise<void>((resolve) => reloaded = resolve);
    const watcher = watchConfig(`${dir}/appserver.ini`, () => {
      reloaded?.();
      return Promise.resolve();
    }, { debounceMs: 10 });
    Deno.kill(Deno.pid, "SIGHUP");
    ok(await within(done, 2_000), "reloaded on SIGHUP");
    await watcher.close();
    await Deno.remove(dir, { recursive: true });
  },
});

/** An appserver.ini for a loopback broker with `keys` added (a key set to null is left out). */
function brokerIni(erpPort: number, listenPort: number, keys: Record<string, string | null> = {}): string {
  return [
    "[GENERAL]",
    "CONSOLELOG = 0",
    "[BALANCE_SMART_CLIENT_DESKTOP]",
    "LOCAL_SERVER_ADDRESS = 127.0.0.1",
    `LOCAL_SERVER_PORT = ${listenPort}`,
    `REMOTE_SERVER_01 = 127.0.0.1 ${erpPort}`,
    ...Object.entries({ HEALTH_CHECK_INTERVAL: "0", STATUS_PORT: "0", DRAIN_TIMEOUT: "0", ...keys })
      .filter(([, v]) => v !== null).map(([k, v]) => `${k} = ${v}`),
  ].join("\n") + "\n";
}

/** A broker-server started from the file at `path` (read as production does), disposed with `await using`. */
async function serverFromFile(path: string, options: BrokerServerOptions = {}) {
  const server = new BrokerServer(await loadServerConfig(path), options);
  server.listen();
  return Object.assign(server, { [Symbol.asyncDispose]: async () => void await server.close() });
}

async function statusCode(url: string, key: string | null): Promise<number> {
  const response = await fetch(url, key ? { headers: { authorization: `Bearer ${key}` } } : {});
  await response.body?.cancel();
  return response.status;
}

Deno.test("reload: a new STATUS_ACCESS_KEY is in force at once (the old one refused), and the status page moves to a new STATUS_PORT", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const oldKey = "old-status-key-0123456789";
  const newKey = "new-status-key-9876543210";
  const [listenPort, statusPort, movedPort] = [freePort(), freePort(), freePort()];
  await Deno.writeTextFile(
    path,
    brokerIni(erp.port, listenPort, { STATUS_PORT: `${statusPort}`, STATUS_ACCESS_KEY: oldKey }),
  );
  await using server = await serverFromFile(path);
  const url = `http://127.0.0.1:${statusPort}/status.json`;
  equal(await statusCode(url, oldKey), 200);

  await Deno.writeTextFile(
    path,
    brokerIni(erp.port, listenPort, { STATUS_PORT: `${statusPort}`, STATUS_ACCESS_KEY: newKey }),
  );
  equal(await server.reload(), true);
  equal(await statusCode(url, oldKey), 401, "the old key is refused");
  equal(await statusCode(url, newKey), 200, "the new key is accepted");
  equal(await statusCode(url, null), 401);
  await logs.waitFor(/Configuration reloaded from .*: STATUS_ACCESS_KEY changed/);

  await Deno.writeTextFile(
    path,
    brokerIni(erp.port, listenPort, { STATUS_PORT: `${movedPort}`, STATUS_ACCESS_KEY: newKey }),
  );
  equal(await server.reload(), true);
  await logs.waitFor(/Configuration reloaded from .*: STATUS_PORT \d+ -> \d+/);
  equal(server.statusAddress?.port, movedPort);
  equal(await statusCode(`http://127.0.0.1:${movedPort}/status.json`, newKey), 200, "the page answers on the new port");
  await rejects(fetch(url), "nothing listens on the old port");
  equal(logs.lines.some((l) => l.includes(oldKey) || l.includes(newKey)), false, "keys never appear in the log");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("reload: keys that take a restart are named in the log and on the status page; LOG_* apply through the logging hook", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const listenPort = freePort();
  await Deno.writeTextFile(path, brokerIni(erp.port, listenPort));
  const applied: string[] = [];
  await using server = await serverFromFile(path, {
    applyLogging: (config) => {
      applied.push(`${config.log.level} ${config.consoleLog}`);
      return Promise.resolve();
    },
  });
  const other = freePort();
  await Deno.writeTextFile(
    path,
    brokerIni(erp.port, other, { LOG_LEVEL: "debug", SERVICE_NAME: "OTHER_NAME" }).replace(
      "CONSOLELOG = 0",
      "CONSOLELOG = 1",
    ),
  );
  equal(await server.reload(), true);
  await logs.waitFor(
    new RegExp(
      `The listening address changed from 127\\.0\\.0\\.1:${listenPort} to 127\\.0\\.0\\.1:${other} in .* \\(LOCAL_SERVER_PORT\\): that takes a restart; still listening on 127\\.0\\.0\\.1:${listenPort}`,
    ),
  );
  await logs.waitFor(/SERVICE_NAME changed from PROTHEUS_BROKER_SERVER to OTHER_NAME .*--install/);
  const reloaded = await logs.waitFor(/Configuration reloaded from /);
  match(reloaded, /CONSOLELOG 0 -> 1/);
  match(reloaded, /LOG_LEVEL info -> debug/);
  deepEqual(applied, ["debug true"]);
  equal(server.config.listen.port, listenPort, "the configuration in force keeps the running port");
  equal(server.config.log.level, "debug");
  deepEqual(server.status().config.pendingRestart, ["LOCAL_SERVER_PORT", "SERVICE_NAME"]);
  match(renderHtml(server.status()), /Changed in the file, waiting for a restart: LOCAL_SERVER_PORT, SERVICE_NAME/);

  // Without a logging hook (a server embedded in another program), LOG_* changes take a restart, and say so.
  await using plain = await serverFromFile(path);
  await Deno.writeTextFile(path, brokerIni(erp.port, other, { LOG_LEVEL: "warning", SERVICE_NAME: "OTHER_NAME" }));
  equal(await plain.reload(), true);
  await logs.waitFor(/LOG_LEVEL changed from debug to warning .*takes a restart/);
  await logs.waitFor(/CONSOLELOG changed from 1 to 0 .*takes a restart/);
  equal(plain.config.log.level, "debug");
  await Deno.remove(dir, { recursive: true });
});

const ADMISSION = "a long admission key for reload tests";

/** Resolves when broker-client closes Smart Client's connection without a session (refused), rejects on an echo. */
async function refusedSession(port: number): Promise<void> {
  const app = await Deno.connect({ hostname: "127.0.0.1", port });
  await app.write(new Uint8Array([1]));
  const got = await app.read(new Uint8Array(1)).catch(() => null);
  app.close();
  equal(got, null, "Smart Client's connection is closed: no session");
}

Deno.test("reload: a file caught half-way through a save (without ADMISSION_KEY) never admits keyless sessions", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const whole = brokerIni(erp.port, freePort(), { ADMISSION_KEY: ADMISSION, MAX_SESSIONS: "50" });
  await Deno.writeTextFile(path, whole);
  // A settle time far longer than the test: the window stays open until the file is complete.
  await using server = await serverFromFile(path, { reloadSettleMs: 60_000 });
  await using keyless = startClient(clientConfig([server.address.port]));

  // The editor's first write: everything up to the key.
  await Deno.writeTextFile(path, whole.slice(0, whole.indexOf("ADMISSION_KEY")));
  const reloading = server.reload();
  await Promise.race([
    logs.waitFor(
      /weakens security \(ADMISSION_KEY removed, MAX_SESSIONS raised from 50 to 5000\): applied only if the file stays so/,
    ),
    reloading,
  ]);
  await refusedSession(keyless.address.port);
  await logs.waitFor(/refused: it requires an admission key/);
  equal(erp.connections, 0, "no keyless session reached the ERP");

  // The editor's second write completes the file: nothing weakens, nothing was applied in between.
  await Deno.writeTextFile(path, whole);
  equal(await within(reloading, 10_000), true, "the reload ended once the file was complete");
  equal(await reloading, true);
  await logs.waitFor(/Configuration reloaded from .*: no change/);
  equal(logs.lines.some((l) => /admission key removed|ADMISSION_KEY removed:/i.test(l)), false, logs.lines.join("\n"));
  equal(server.config.admissionKey, ADMISSION);
  equal(server.config.limits.maxSessions, 50);
  await refusedSession(keyless.address.port);
  equal(erp.connections, 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an editor saving in two steps, seen by the file watcher: no keyless session, no key removed", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const whole = brokerIni(erp.port, freePort(), { ADMISSION_KEY: ADMISSION });
  await Deno.writeTextFile(path, whole);
  await using server = await serverFromFile(path, { reloadSettleMs: 10_000 });
  const watcher = watchConfig(path, () => server.reload(), { debounceMs: 50, sighup: false });
  await using keyless = startClient(clientConfig([server.address.port]));
  const file = await Deno.open(path, { write: true, truncate: true });
  const bytes = new TextEncoder().encode(whole);
  const cut = whole.indexOf("ADMISSION_KEY");
  await file.write(bytes.subarray(0, cut));
  await logs.waitFor(/weakens security \(ADMISSION_KEY removed\): applied only if the file stays so for 10 s/);
  await refusedSession(keyless.address.port);
  await file.write(bytes.subarray(cut));
  file.close();
  await logs.waitFor(/Configuration reloaded from .*: no change/);
  await watcher.close();
  equal(logs.lines.some((l) => /ADMISSION_KEY removed:/.test(l)), false, logs.lines.join("\n"));
  equal(server.config.admissionKey, ADMISSION);
  equal(erp.connections, 0, "no keyless session reached the ERP");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("reload: ADMISSION_KEY removed for good is applied once the file has stayed so for the settle time", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const port = freePort();
  await Deno.writeTextFile(path, brokerIni(erp.port, port, { ADMISSION_KEY: ADMISSION }));
  await using server = await serverFromFile(path, { reloadSettleMs: 300 });
  await using keyless = startClient(clientConfig([server.address.port]));
  await refusedSession(keyless.address.port);

  await Deno.writeTextFile(path, brokerIni(erp.port, port));
  const started = Date.now();
  equal(await server.reload(), true);
  ok(Date.now() - started >= 300, "applied only after the settle time");
  await logs.waitFor(/Configuration reloaded from .*: ADMISSION_KEY removed: new sessions no longer need/);
  equal(server.config.admissionKey, null);
  const app = await Deno.connect({ hostname: "127.0.0.1", port: keyless.address.port });
  equal(await roundTrip(app, "now admitted"), "now admitted");
  app.close();
  await waitFor(() => server.sessions.length === 0, "the session to end");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("reload: a file that does not parse half-way through a save is not reported; one that stays so is, after the settle time", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const port = freePort();
  const whole = brokerIni(erp.port, port, { LOG_LEVEL: "debug" });
  await Deno.writeTextFile(path, brokerIni(erp.port, port));
  await using server = await serverFromFile(path, { reloadSettleMs: 60_000, applyLogging: () => Promise.resolve() });

  // Cut in the middle of the REMOTE_SERVER_01 line: "127.0" is no address.
  await Deno.writeTextFile(path, whole.slice(0, whole.indexOf("127.0.0.1", whole.indexOf("REMOTE_SERVER_01")) + 5));
  const reloading = server.reload();
  await Promise.race([logs.waitFor(/cannot be read as it is .*Cannot parse REMOTE_SERVER_01/), reloading]);
  await Deno.writeTextFile(path, whole);
  equal(await reloading, true);
  await logs.waitFor(/Configuration reloaded from .*: LOG_LEVEL info -> debug/);
  equal(logs.lines.some((l) => l.includes("reload failed")), false, "no error for a file caught half-way");

  const other = `${dir}/other.ini`;
  const otherPort = freePort();
  await Deno.writeTextFile(other, brokerIni(erp.port, otherPort));
  await using quick = await serverFromFile(other, { reloadSettleMs: 300 });
  await Deno.writeTextFile(
    other,
    "[BALANCE_SMART_CLIENT_DESKTOP]\nLOCAL_SERVER_PORT = 4000\nREMOTE_SERVER_01 = nowhere\n",
  );
  const started = Date.now();
  equal(await quick.reload(), false);
  ok(Date.now() - started >= 300, "reported once the file stayed so for the settle time");
  await logs.waitFor(
    /Configuration reload failed; the running configuration stays as it was: .*Cannot parse REMOTE_SERVER_01/,
  );
  equal(quick.config.listen.port, otherPort);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("security weakenings: removed keys and TLS, raised limits, a secret cut short; nothing else", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const read = async (keys: Record<string, string | null>) => {
    await Deno.writeTextFile(path, brokerIni(1, 2, keys));
    return await loadServerConfig(path);
  };
  const strict = await read({
    ADMISSION_KEY: ADMISSION,
    STATUS_ACCESS_KEY: "status-key-0123456789",
    MAX_SESSIONS: "100",
    LINK_TLS_CERT: "cert.pem",
    LINK_TLS_KEY: "key.pem",
  });
  deepEqual(securityWeakenings(strict, strict), []);
  deepEqual(securityWeakenings(strict, await read({ LOG_LEVEL: "debug" })), [
    "ADMISSION_KEY removed",
    "STATUS_ACCESS_KEY removed",
    "LINK_TLS_CERT and LINK_TLS_KEY removed",
    "MAX_SESSIONS raised from 100 to 5000",
  ]);
  deepEqual(
    securityWeakenings(
      strict,
      await read({
        ADMISSION_KEY: ADMISSION.slice(0, 20),
        STATUS_ACCESS_KEY: "another-status-key-42",
        MAX_SESSIONS: "10",
        LINK_TLS_CERT: "cert.pem",
        LINK_TLS_KEY: "key.pem",
      }),
    ),
    ["ADMISSION_KEY cut short"],
    "a new status key and a lower limit are not weaker; a key cut to a prefix of itself looks like a half-saved file",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("broker-server applies a new LOG_FILE on reload: the next lines go to the new file", async () => {
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const port = freePort();
  await Deno.writeTextFile(path, brokerIni(erp.port, port, { LOG_FILE: "first.log" }));
  const entry = new URL("../../server.ts", import.meta.url).pathname.replace(/^\/([A-Za-z]:)/, "$1");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry, "--config", path],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const contents = (name: string) => Deno.readTextFile(`${dir}/${name}`).catch(() => "");
  /** Polls the file (a log file has no event to wait for) until `pattern` is in it; false after 20 s. */
  const logged = async (name: string, pattern: RegExp) => {
    for (const end = Date.now() + 20_000; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) {
      if (pattern.test(await contents(name))) return true;
    }
    return false;
  };
  ok(await logged("first.log", /are applied live/), `broker-server started: ${await contents("first.log")}`);
  await Deno.writeTextFile(path, brokerIni(erp.port, port, { LOG_FILE: "second.log", LOG_LEVEL: "debug" }));
  ok(
    await logged("second.log", /Configuration reloaded from .*LOG_FILE .*first\.log -> .*second\.log/),
    `second.log gets the reload line; first.log has:\n${await contents("first.log")}`,
  );
  child.kill("SIGTERM");
  await child.stderr.cancel();
  await child.status;
  await Deno.remove(dir, { recursive: true });
});

Deno.test("every appserver.ini key in the docs has a reload rule, and the docs' reload list names each rule's key", async () => {
  const keysOf = (text: string) => new Set(keyItems(text).flatMap((item) => item.keys));
  const documented = keysOf(
    await docSection("configuration.md", "## Configuration: appserver.ini", "`[GENERAL] CONSOLELOG=1`"),
  );
  const reloadList = keysOf(await docSection("operations.md", "## Live reload", "Keys that wait for a restart"));
  const ruled = new Set([...RELOAD_RULES.map((r) => r.key), "REMOTE_SERVER_<suffix>", "SORT_METHOD"]);
  ok(documented.size > 30, `found the key list: ${[...documented]}`);
  deepEqual([...documented].filter((k) => !ruled.has(k)), [], "documented keys without a reload rule");
  deepEqual([...ruled].filter((k) => !reloadList.has(k)), [], "rules missing from the docs' reload list");
});

Deno.test("reload: a new STATUS_PORT that another program holds keeps the status page on its old port (with the new key)", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const oldKey = "old-status-key-0123456789";
  const newKey = "new-status-key-9876543210";
  const [listenPort, statusPort] = [freePort(), freePort()];
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await Deno.writeTextFile(
    path,
    brokerIni(erp.port, listenPort, { STATUS_PORT: `${statusPort}`, STATUS_ACCESS_KEY: oldKey }),
  );
  await using server = await serverFromFile(path);
  const url = `http://127.0.0.1:${statusPort}/status.json`;
  equal(await statusCode(url, oldKey), 200);

  await Deno.writeTextFile(
    path,
    brokerIni(erp.port, listenPort, { STATUS_PORT: `${taken.addr.port}`, STATUS_ACCESS_KEY: newKey }),
  );
  await server.reload();
  await logs.waitFor(/another program already uses this port/);
  equal(server.statusAddress?.port, statusPort, "the page stays where it was");
  equal(await statusCode(url, newKey), 200, "and answers with the new key");
  equal(await statusCode(url, oldKey), 401, "the old key is refused");
  equal(server.config.status.listen.port, statusPort, "the configuration in force says where the page is");

  // Once the port is free, the same file moves the page on the next reload.
  taken.close();
  equal(await server.reload(), true);
  equal(server.statusAddress?.port, taken.addr.port);
  equal(await statusCode(`http://127.0.0.1:${taken.addr.port}/status.json`, newKey), 200);
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name:
    "broker-server stops on request while a reload is settling a file that keeps changing (the stop has a deadline)",
  ignore: Deno.build.os === "windows",
  async fn() {
    const { serverMain } = await import("../../src/server/main.ts");
    await using erp = startErp(echo);
    const dir = await Deno.makeTempDir();
    const path = `${dir}/appserver.ini`;
    const logFile = `${dir}/broker-server.log`;
    const listenPort = freePort();
    const ini = (maxSessions: number) =>
      brokerIni(erp.port, listenPort, { MAX_SESSIONS: `${maxSessions}`, LOG_FILE: logFile });
    await Deno.writeTextFile(path, ini(100));
    const stop = new AbortController();
    const main = serverMain(["--config", path], { signal: stop.signal });
    // A tool that rewrites the file all the time, each time raising a limit: never the same bytes for the
    // settle time, so the reload keeps settling.
    let writing = true;
    const writer = (async () => {
      for (let n = 101; writing; n++) {
        await Deno.writeTextFile(path, ini(n));
        await new Promise((resolve) => setTimeout(resolve, 400)); // past the watcher's 300 ms debounce, within the 1 s settle
      }
    })();
    try {
      const logged = async (pattern: RegExp) => {
        const deadline = Date.now() + 10_000;
        while (!pattern.test(await Deno.readTextFile(logFile).catch(() => ""))) {
          if (Date.now() > deadline) throw new Error(`broker-server never logged ${pattern}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      };
      await logged(/changed while settling/);
      stop.abort();
      // DRAIN_TIMEOUT = 0: the stop takes at most the 10 s margin; a stop that waits for the settle never ends.
      equal(await within(main, 12_000), true, "broker-server stopped");
      equal(await main, 0);
    } finally {
      writing = false;
      await writer;
      stop.abort();
    }
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test("reload: a file caught half-way through a save (before its LOG_FILE line) does not turn the log file off, nor cut its name short", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const logFile = `${dir}/logs/broker-server.log`;
  const whole = brokerIni(erp.port, freePort(), { LOG_FILE: logFile });
  await Deno.writeTextFile(path, whole);
  const applied: (string | null)[] = [];
  await using server = await serverFromFile(path, {
    reloadSettleMs: 60_000,
    applyLogging: (next) => {
      applied.push(next.log.file);
      return Promise.resolve();
    },
  });
  equal(server.config.log.file, logFile);

  for (const cut of [whole.indexOf("LOG_FILE"), whole.indexOf("broker-server.log")]) {
    // The editor's first write: everything before the cut.
    await Deno.writeTextFile(path, whole.slice(0, cut));
    const reloading = server.reload();
    await Promise.race([logs.waitFor(/weakens security \(LOG_FILE /), reloading]);
    // Its second write completes the file.
    await Deno.writeTextFile(path, whole);
    equal(await within(reloading, 10_000), true, "the reload ended once the file was complete");
    deepEqual(applied, [], "the log settings were never changed");
    equal(server.config.log.file, logFile);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("reload: values with braces are logged as written (a message built from the file is not a log template)", async () => {
  await using logs = await captureLogs();
  await using erp = startErp(echo);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  const port = freePort();
  await Deno.writeTextFile(path, brokerIni(erp.port, port, { SERVICE_DISPLAY_NAME: "Broker {test}" }));
  await using server = await serverFromFile(path);
  await Deno.writeTextFile(
    path,
    brokerIni(erp.port, port, { SERVICE_DISPLAY_NAME: "Broker {prod}", MAX_SESSIONS: "10" }) +
      "MAX_SESSIONS = {twice}\n",
  );
  equal(await server.reload(), true);
  const line = await logs.waitFor(/SERVICE_DISPLAY_NAME changed/);
  match(line, /from Broker \{test\} to Broker \{prod\} in /);
  match(await logs.waitFor(/Duplicate key MAX_SESSIONS/), /this one \("\{twice\}"\) is ignored/);
  await Deno.remove(dir, { recursive: true });
});

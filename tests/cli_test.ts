import { deepEqual, equal, match, throws } from "node:assert/strict";
import { defaultConfigPath, parseCli, UsageError } from "../src/cli.ts";
import { freePort } from "./helpers/apps.ts";

Deno.test("TOTVS spellings map to ours", () => {
  const cli = parseCli(["-balance_smart_client_desktop", "-d", "--config", "x.ini"], { driver: false });
  equal(cli.console, true);
  equal(cli.config, "x.ini");
  equal(parseCli(["-console"], { driver: false }).console, true);
});

Deno.test("bad arguments are a UsageError with a readable message", () => {
  throws(() => parseCli(["--nope"], { driver: false }), UsageError);
  throws(() => parseCli(["--driver", "x"], { driver: false }), UsageError, "only broker-client has --driver");
  throws(
    () => parseCli(["--log-level", "loud"], { driver: true }),
    /Cannot use --log-level: expected one of debug, info, warning, error, got "loud"/,
  );
  throws(
    () => parseCli(["--log-format", "xml"], { driver: true }),
    /Cannot use --log-format: expected text or json, got "xml"/,
  );
  deepEqual(parseCli(["--driver", "AAA", "--check"], { driver: true }).driver, "AAA");
});

Deno.test("default config: next to the compiled program, or the current directory under deno run", () => {
  equal(
    defaultConfigPath("appserver.ini", { execPath: "/opt/broker/broker-server", cwd: "/home/x" }),
    "/opt/broker/appserver.ini",
  );
  equal(defaultConfigPath("appserver.ini", { execPath: "/usr/bin/deno", cwd: "/home/x" }), "/home/x/appserver.ini");
  equal(
    defaultConfigPath("smartclient.ini", { execPath: "C:\\TOTVS\\SmartClient\\broker-client.exe", cwd: "C:\\Windows" }),
    "C:\\TOTVS\\SmartClient\\smartclient.ini",
  );
  equal(
    defaultConfigPath("smartclient.ini", { execPath: "C:\\Program Files\\deno\\deno.exe", cwd: "D:\\work" }).replaceAll(
      "\\",
      "/",
    ),
    "D:/work/smartclient.ini",
  );
});

async function run(entry: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const path = new URL(`../${entry}`, import.meta.url).pathname.replace(/^\/([A-Za-z]:)/, "$1");
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", path, ...args], stdin: "null" }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

Deno.test("--check prints the effective settings and exits 0; a bad file exits 2 naming file and line", async () => {
  const ok = await run("server.ts", "--check", "--config", "examples/appserver.ini");
  equal(ok.code, 0);
  match(
    ok.stdout,
    /REMOTE_SERVER_01 +172\.16\.50\.42:5000\n +REMOTE_SERVER_02 +172\.16\.50\.42:5001\n +REMOTE_SERVER_03 +172\.16\.50\.42:5002/,
  );
  const client = await run("client.ts", "--check", "--config", "examples/smartclient.ini");
  equal(client.code, 0);
  match(client.stdout, /Broker servers \(1\):\n +172\.16\.50\.42:4000/);

  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${dir}/bad.ini`,
    "[BALANCE_SMART_CLIENT_DESKTOP]\nLOCAL_SERVER_PORT = 4000\nREMOTE_SERVER_01 = host\n",
  );
  const bad = await run("server.ts", "--check", "--config", `${dir}/bad.ini`);
  equal(bad.code, 2);
  match(bad.stderr, /broker-server: .*bad\.ini:3: Cannot parse REMOTE_SERVER_01: expected "host port"/);
  const missing = await run("client.ts", "--config", `${dir}/none.ini`);
  equal(missing.code, 2);
  match(missing.stderr, /broker-client: Cannot read configuration file ".*none\.ini": file not found/);
  const usage = await run("server.ts", "--bogus");
  equal(usage.code, 2);
  match(usage.stderr, /Run broker-server --help for the options/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--help lists the options and keys; --version prints the version", async () => {
  const help = await run("server.ts", "--help");
  equal(help.code, 0);
  for (
    const word of [
      "--config",
      "--check",
      "LOCAL_SERVER_PORT",
      "REMOTE_SERVER_<xx>",
      "RESUME_TIMEOUT",
      "-balance_smart_client_desktop",
    ]
  ) {
    equal(help.stdout.includes(word), true, word);
  }
  const weights = help.stdout.split("\n").findIndex((line) => line.includes("values may end with weight=N"));
  match(help.stdout.split("\n")[weights] ?? "", /^REMOTE_SERVER_<xx> values may end with weight=N and max=N/);
  const clientHelp = await run("client.ts", "-h");
  equal(clientHelp.stdout.includes("BrokerServer"), true);
  match((await run("client.ts", "--version")).stdout, /^broker-client \d+\.\d+\.\d+/);
});

Deno.test("--check never prints secrets", async () => {
  const dir = await Deno.makeTempDir();
  const secret = "very-secret-admission-key-123";
  await Deno.writeTextFile(
    `${dir}/appserver.ini`,
    `[BALANCE_SMART_CLIENT_DESKTOP]\nLOCAL_SERVER_PORT = 4000\nREMOTE_SERVER_01 = a 1\nADMISSION_KEY = ${secret}\nSTATUS_ADDRESS = 0.0.0.0\nSTATUS_ACCESS_KEY = another-secret-key\n`,
  );
  const out = await run("server.ts", "--check", "--config", `${dir}/appserver.ini`);
  equal(out.code, 0);
  match(out.stdout, /admission key set \(hidden\)/);
  match(out.stdout, /access key set, hidden/);
  equal(out.stdout.includes(secret) || out.stdout.includes("another-secret-key"), false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--check never prints secrets written twice (a key rotation), in either program", async () => {
  const dir = await Deno.makeTempDir();
  const secrets = [
    "admission-key-before-rotation",
    "admission-key-after-rotation",
    "status-key-old-1",
    "status-key-new-2",
  ];
  await Deno.writeTextFile(
    `${dir}/appserver.ini`,
    `[BALANCE_SMART_CLIENT_DESKTOP]\nLOCAL_SERVER_PORT = 4000\nREMOTE_SERVER_01 = a 1\nADMISSION_KEY = ${
      secrets[0]
    }\n` +
      `ADMISSION_KEY = ${secrets[1]}\nSTATUS_ACCESS_KEY = ${secrets[2]}\nSTATUS_ACCESS_KEY = ${secrets[3]}\n`,
  );
  await Deno.writeTextFile(
    `${dir}/smartclient.ini`,
    `[drivers]\nactive=b\n[b]\nserver=127.0.0.1\nport=1\nBrokerProxy=1\nBrokerServer=127.0.0.1:2\n` +
      `ADMISSION_KEY=${secrets[0]}\nADMISSION_KEY=${secrets[1]}\nLOG_FILE=\n`,
  );
  const server = await run("server.ts", "--check", "--config", `${dir}/appserver.ini`);
  const client = await run("client.ts", "--check", "--config", `${dir}/smartclient.ini`);
  try {
    for (const [out, expected] of [[server, 2], [client, 1]] as const) {
      equal(out.code, 0, out.stderr);
      equal(
        out.stdout.match(/Warning: .*Duplicate key .*this one is ignored \(values hidden: secret\)/g)?.length,
        expected,
      );
      for (const secret of secrets) equal(out.stdout.includes(secret) || out.stderr.includes(secret), false, secret);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("broker-client's log at start does not show an admission key written twice", async () => {
  const dir = await Deno.makeTempDir();
  const secrets = ["client-key-before-rotation", "client-key-after-rotation"];
  await Deno.writeTextFile(
    `${dir}/smartclient.ini`,
    `[drivers]\nactive=b\n[b]\nserver=127.0.0.1\nport=${freePort()}\nBrokerProxy=1\nBrokerServer=127.0.0.1:2\n` +
      `ADMISSION_KEY=${secrets[0]}\nADMISSION_KEY=${secrets[1]}\nLOG_FILE=client.log\n`,
  );
  const path = new URL("../client.ts", import.meta.url).pathname.replace(/^\/([A-Za-z]:)/, "$1");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", path, "--config", `${dir}/smartclient.ini`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  try {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      stderr += decoder.decode(chunk, { stream: true });
      if (stderr.includes("Duplicate key ADMISSION_KEY")) break;
    }
  } finally {
    child.kill();
    await child.status;
  }
  const log = await Deno.readTextFile(`${dir}/client.log`);
  await Deno.remove(dir, { recursive: true });
  match(
    log,
    /Duplicate key ADMISSION_KEY in \[b\]: the first one \(line 8\) wins, this one is ignored \(values hidden: secret\)/,
  );
  for (const secret of secrets) equal(log.includes(secret) || stderr.includes(secret), false, secret);
});

/**
 * `--check` opens and parses every file the configuration names (TLS
 * certificate, key and CA, the log folder), exactly as a real start does:
 * a file that would stop the program makes `--check` fail too, saying which.
 */
import { equal, match, ok } from "node:assert/strict";

const FIXTURES = new URL("./fixtures/", import.meta.url);

function pathOf(url: URL): string {
  return url.pathname.replace(/^\/([A-Za-z]:)/, "$1");
}

async function run(entry: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const path = pathOf(new URL(`../${entry}`, import.meta.url));
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", path, ...args], stdin: "null" }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** A PEM private key that does not belong to the test certificate. */
async function otherKeyPem(): Promise<string> {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const base64 = btoa(String.fromCharCode(...der)).match(/.{1,64}/g)?.join("\n");
  return `-----BEGIN PRIVATE KEY-----\n${base64}\n-----END PRIVATE KEY-----\n`;
}

async function serverIni(dir: string, extra: string): Promise<string> {
  const path = `${dir}/appserver.ini`;
  await Deno.writeTextFile(
    path,
    `[BALANCE_SMART_CLIENT_DESKTOP]\nLOCAL_SERVER_ADDRESS = 127.0.0.1\nLOCAL_SERVER_PORT = 1\nREMOTE_SERVER_01 = 127.0.0.1 2\nSTATUS_PORT = 0\n${extra}\n`,
  );
  return path;
}

Deno.test("broker-server --check fails, naming the key and file, when a TLS file is missing, unparsable or mismatched", async () => {
  const dir = await Deno.makeTempDir();
  const cert = pathOf(new URL("test_cert.pem", FIXTURES));
  const key = pathOf(new URL("test_key.pem", FIXTURES));
  await Deno.writeTextFile(`${dir}/other_key.pem`, await otherKeyPem());
  await Deno.writeTextFile(`${dir}/garbage.pem`, "not a certificate\n");

  const good = await run(
    "server.ts",
    "--check",
    "--config",
    await serverIni(dir, `LINK_TLS_CERT = ${cert}\nLINK_TLS_KEY = ${key}`),
  );
  equal(good.code, 0, good.stderr);
  match(good.stdout, /Configuration is valid\./);

  const cases: [string, RegExp][] = [
    [
      `LINK_TLS_CERT = missing_cert.pem\nLINK_TLS_KEY = ${key}`,
      /Cannot read LINK_TLS_CERT ".*missing_cert\.pem": .*(not found|No such file)/i,
    ],
    [`LINK_TLS_CERT = ${cert}\nLINK_TLS_KEY = missing_key.pem`, /Cannot read LINK_TLS_KEY ".*missing_key\.pem"/],
    [`LINK_TLS_CERT = garbage.pem\nLINK_TLS_KEY = ${key}`, /Cannot use LINK_TLS_CERT ".*garbage\.pem".*certificate/i],
    [`LINK_TLS_CERT = ${cert}\nLINK_TLS_KEY = garbage.pem`, /Cannot use LINK_TLS_KEY ".*garbage\.pem".*key/i],
    [
      `LINK_TLS_CERT = ${cert}\nLINK_TLS_KEY = other_key.pem`,
      /Cannot use LINK_TLS_CERT ".*test_cert\.pem" with LINK_TLS_KEY ".*other_key\.pem": .*(mismatch|consistent)/i,
    ],
  ];
  for (const [lines, message] of cases) {
    const out = await run("server.ts", "--check", "--config", await serverIni(dir, lines));
    equal(out.code, 2, `--check with ${lines}: ${out.stdout}`);
    ok(!out.stdout.includes("Configuration is valid"), "not called valid");
    match(out.stderr, message);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("broker-server --check fails when the log folder cannot be written; a real start says the same", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/blocker`, "a file where the log folder should be");
  const path = await serverIni(dir, "LOG_FILE = blocker/broker.log");
  const check = await run("server.ts", "--check", "--config", path);
  equal(check.code, 2, check.stdout);
  match(check.stderr, /broker-server: .*Cannot write LOG_FILE ".*broker\.log"/);
  const start = await run("server.ts", "--config", path);
  equal(start.code, 2);
  match(start.stderr, /broker-server: .*Cannot write LOG_FILE ".*broker\.log"/);

  // A writable folder passes, and --check leaves no empty log file behind.
  const fine = await run("server.ts", "--check", "--config", await serverIni(dir, "LOG_FILE = logs/broker.log"));
  equal(fine.code, 0, fine.stderr);
  equal(await Deno.stat(`${dir}/logs/broker.log`).then(() => true, () => false), false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a real broker-server start fails like --check on a missing certificate, on the console and in the log", async () => {
  const dir = await Deno.makeTempDir();
  const key = pathOf(new URL("test_key.pem", FIXTURES));
  const path = await serverIni(dir, `LINK_TLS_CERT = missing_cert.pem\nLINK_TLS_KEY = ${key}\nLOG_FILE = broker.log`);
  const check = await run("server.ts", "--check", "--config", path);
  const start = await run("server.ts", "--config", path);
  equal(check.code, 2);
  equal(start.code, 2);
  const reason = /Cannot read LINK_TLS_CERT ".*missing_cert\.pem"/;
  match(check.stderr, reason);
  match(start.stderr, reason);
  // A service has no console: the start also writes it to the log file.
  match(await Deno.readTextFile(`${dir}/broker.log`), reason);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("broker-client --check fails when LINK_TLS_CA is missing or holds no certificate", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/garbage.pem`, "not a certificate\n");
  const ini = async (ca: string) => {
    const path = `${dir}/smartclient.ini`;
    await Deno.writeTextFile(
      path,
      `[drivers]\nactive=b\n[b]\nserver=127.0.0.1\nport=1\nBrokerProxy=1\nBrokerServer=127.0.0.1:2\nLOG_FILE=\nLINK_TLS_CA=${ca}\n`,
    );
    return path;
  };
  const good = await run("client.ts", "--check", "--config", await ini(pathOf(new URL("test_cert.pem", FIXTURES))));
  equal(good.code, 0, good.stderr);
  for (
    const [ca, message] of [
      ["missing_ca.pem", /broker-client: .*Cannot read LINK_TLS_CA ".*missing_ca\.pem"/],
      ["garbage.pem", /broker-client: .*Cannot use LINK_TLS_CA ".*garbage\.pem": .*certificate/i],
    ] as const
  ) {
    const out = await run("client.ts", "--check", "--config", await ini(ca));
    equal(out.code, 2, out.stdout);
    ok(!out.stdout.includes("Configuration is valid"), "not called valid");
    match(out.stderr, message);
  }
  await Deno.remove(dir, { recursive: true });
});

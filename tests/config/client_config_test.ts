import { deepEqual, equal, throws } from "node:assert/strict";
import { clientConfigFromIni, loadClientConfig } from "../../src/config/client_config.ts";
import { parseIni } from "../../src/config/ini.ts";
import { configError } from "../helpers/assert_config.ts";

const parse = (lines: string[], driver?: string) =>
  clientConfigFromIni(parseIni(lines.join("\n"), "smartclient.ini"), driver);

Deno.test("the TOTVS example: server/port are the broker server, we listen on 127.0.0.1:port and say so", async () => {
  const config = await loadClientConfig("examples/smartclient.ini");
  equal(config.driver, "com_broker");
  deepEqual(config.brokerServers, [{ hostname: "172.16.50.42", port: 4000 }]);
  deepEqual(config.listen, { hostname: "127.0.0.1", port: 4000 });
  equal(config.notes.length, 1);
  equal(config.notes[0]?.includes("point Smart Client at it (server=127.0.0.1, port=4000)"), true);
  deepEqual(config.warnings, []);
});

Deno.test("the loopback example: BrokerServer names the broker server, server/port the local listener", async () => {
  const config = await loadClientConfig("examples/loopback/smartclient.ini");
  deepEqual(config.listen, { hostname: "127.0.0.1", port: 14001 });
  deepEqual(config.brokerServers, [{ hostname: "127.0.0.1", port: 14000 }]);
  deepEqual(config.notes, []);
});

const base = ["[drivers]", "active=Broker", "[broker]", "server=127.0.0.1", "port=4000", "BrokerProxy=1"];

Deno.test("several broker servers, in order, in every address spelling", () => {
  const config = parse([...base, "BrokerServer = 10.0.0.1:4000, broker2.local:4001 ,[fd00::1]:4002"]);
  deepEqual(config.brokerServers, [
    { hostname: "10.0.0.1", port: 4000 },
    { hostname: "broker2.local", port: 4001 },
    { hostname: "fd00::1", port: 4002 },
  ]);
  deepEqual(config.listen, { hostname: "127.0.0.1", port: 4000 });
});

Deno.test("--driver picks another section", () => {
  const config = parse([
    ...base,
    "BrokerServer=10.0.0.1:4000",
    "[other]",
    "server=localhost",
    "port=5000",
    "BrokerProxy=1",
    "BrokerServer=10.0.0.2:4000",
  ], "OTHER");
  equal(config.driver, "other");
  deepEqual(config.listen, { hostname: "localhost", port: 5000 });
});

Deno.test("listening beyond the loopback needs LISTEN_ADDRESS, and then warns", () => {
  throws(
    () =>
      parse([
        "[drivers]",
        "active=b",
        "[b]",
        "server=10.0.0.9",
        "port=4000",
        "BrokerProxy=1",
        "BrokerServer=10.0.0.1:4000",
      ]),
    configError(/^smartclient\.ini:4: Cannot listen on server=10\.0\.0\.9: .* listens on the loopback only/),
  );
  const config = parse([...base, "BrokerServer=10.0.0.1:4000", "LISTEN_ADDRESS=0.0.0.0"]);
  deepEqual(config.listen, { hostname: "0.0.0.0", port: 4000 });
  deepEqual(config.warnings, [
    "smartclient.ini:8: broker-client listens on 0.0.0.0:4000, which is not a loopback address: other machines can reach it",
  ]);
});

Deno.test("bad input: one clear message naming file, line and key", () => {
  const cases: [string[], RegExp][] = [
    [["[config]", "x=1"], /^smartclient\.ini: Cannot find section \[drivers\]/],
    [["[drivers]", "[b]"], /^smartclient\.ini:1: Cannot find key active in \[drivers\]/],
    [
      ["[drivers]", "active=missing", "[b]"],
      /^smartclient\.ini: Cannot find section \[missing\] named by \[drivers\] active: the sections in this file are \[drivers\], \[b\]/,
    ],
    [
      ["[drivers]", "active=b", "[b]", "server=127.0.0.1", "port=4000"],
      /^smartclient\.ini:3: Section \[b\] does not enable the broker: expected "BrokerProxy=1"\. /,
    ],
    [
      ["[drivers]", "active=b", "[b]", "server=127.0.0.1", "port=4000", "BrokerProxy=0"],
      /^smartclient\.ini:6: Section \[b\] does not enable the broker: expected "BrokerProxy=1", got "0"/,
    ],
    [
      ["[drivers]", "active=b", "[b]", "port=4000", "BrokerProxy=1"],
      /^smartclient\.ini:3: Cannot find key server in \[b\]/,
    ],
    [
      ["[drivers]", "active=b", "[b]", "server=", "port=4000", "BrokerProxy=1"],
      /^smartclient\.ini:4: Cannot parse server: expected a host name or address, got ""/,
    ],
    [
      ["[drivers]", "active=b", "[b]", "server=x", "BrokerProxy=1"],
      /^smartclient\.ini:3: Cannot find key port in \[b\]/,
    ],
    [
      ["[drivers]", "active=b", "[b]", "server=x", "port=0", "BrokerProxy=1"],
      /^smartclient\.ini:5: Cannot parse port: expected a port in 1\.\.65535, got "0"/,
    ],
    [
      [...base, "BrokerServer=10.0.0.1"],
      /^smartclient\.ini:7: Cannot parse BrokerServer: expected "host port", "host:port" or "\[ipv6\]:port", got "10\.0\.0\.1"/,
    ],
    [[...base, "BrokerServer= , "], /^smartclient\.ini:7: Cannot parse BrokerServer: expected one or more "host:port"/],
    [
      [...base],
      /^smartclient\.ini:4: Cannot use server=127\.0\.0\.1 port=4000 as the broker server: broker-client itself listens on 127\.0\.0\.1:4000/,
    ],
    [
      [...base, "BrokerServer=a:1", "NEW_SESSION_TIMEOUT=0"],
      /^smartclient\.ini:8: NEW_SESSION_TIMEOUT is out of range: expected 100ms to 1h, got "0"$/,
    ],
    [
      [...base, "BrokerServer=a:1", "CONNECT_TIMEOUT=3000000s"],
      /^smartclient\.ini:8: CONNECT_TIMEOUT is out of range: expected 100ms to 10m, got "3000000s"$/,
    ],
    [
      [...base, "BrokerServer=a:1", "REPLAY_BUFFER_SIZE=4G"],
      /^smartclient\.ini:8: REPLAY_BUFFER_SIZE is out of range: expected 64K to 1G, got "4G"$/,
    ],
  ];
  for (const [lines, expected] of cases) throws(() => parse(lines), configError(expected), lines.join(" | "));
  throws(() => parse(base, "nope"), configError(/Cannot find section \[nope\] named by --driver/));
});

Deno.test("duplicate keys warn; Smart Client's own keys are left alone; typos of ours are reported", () => {
  const config = parse([
    ...base,
    "BrokerServer=a:1",
    "BrokerServer=b:2",
    "lastmainprog=SIGAMDI",
    "BrokerServr=c:3",
    "RESUME_TIMEOT=5",
  ]);
  deepEqual(config.brokerServers, [{ hostname: "a", port: 1 }]);
  deepEqual(config.warnings, [
    'smartclient.ini:8: Duplicate key BrokerServer in [broker]: the first one (line 7, "a:1") wins, this one ("b:2") is ignored',
    "smartclient.ini:10: Unknown key BrokerServr in [broker] is ignored",
    "smartclient.ini:11: Unknown key RESUME_TIMEOT in [broker] is ignored",
  ]);
});

Deno.test("client TLS keys: a CA file or a pinned fingerprint turns TLS on", () => {
  const tls = (...extra: string[]) => parse([...base, "BrokerServer=a:1", ...extra]).tls;
  equal(tls(), null);
  deepEqual(tls("LINK_TLS=1"), { caFile: null, fingerprint: null });
  deepEqual(
    tls("LINK_TLS_FINGERPRINT = sha256:7e6cad39 31d85086 ff94fe50 47a0050b 29dc5b01 5ca64bf0 69d3c44c 8d2cd599"),
    {
      caFile: null,
      fingerprint: "7E:6C:AD:39:31:D8:50:86:FF:94:FE:50:47:A0:05:0B:29:DC:5B:01:5C:A6:4B:F0:69:D3:C4:4C:8D:2C:D5:99",
    },
  );
  throws(() => tls("LINK_TLS_FINGERPRINT = 12:34"), configError(/expected a SHA-256 fingerprint \(64 hex digits/));
});

Deno.test("the admission key never appears in messages, even written twice", () => {
  const keys = ["client-admission-key-old", "client-admission-key-new"];
  const config = parse([...base, "BrokerServer=a:1", `ADMISSION_KEY=${keys[0]}`, `ADMISSION_KEY=${keys[1]}`]);
  equal(config.admissionKey, keys[0]);
  deepEqual(config.warnings, [
    "smartclient.ini:9: Duplicate key ADMISSION_KEY in [broker]: the first one (line 8) wins, this one is ignored (values hidden: secret)",
  ]);
  throws(
    () => parse([...base, "BrokerServer=a:1", `Admission_Key ${keys[0]}`]),
    (err: Error) =>
      /^smartclient\.ini:8: Cannot parse line in \[broker\]: expected "KEY = value", got "Admission_Key\.\.\." \(the rest hidden: secret\)$/
        .test(err.message) && !err.message.includes(keys[0] as string),
  );
});

Deno.test('UTF-16 smartclient.ini (Notepad\'s "Unicode"), little- or big-endian, loads', async () => {
  const dir = await Deno.makeTempDir();
  const text = "\ufeff[drivers]\r\nactive=com_broker\r\n[com_broker]\r\nserver=127.0.0.1\r\nport=4000\r\n" +
    "BrokerProxy=1\r\nBrokerServer=172.16.50.42:4000\r\nLOG_FILE=\\\\nas\\logs\\client.log\r\n";
  try {
    for (const bigEndian of [false, true]) {
      const bytes = new Uint8Array(text.length * 2);
      for (let i = 0; i < text.length; i++) {
        new DataView(bytes.buffer).setUint16(i * 2, text.charCodeAt(i), !bigEndian);
      }
      await Deno.writeFile(`${dir}/smartclient.ini`, bytes);
      const config = await loadClientConfig(`${dir}/smartclient.ini`);
      deepEqual(config.brokerServers, [{ hostname: "172.16.50.42", port: 4000 }], `bigEndian ${bigEndian}`);
      equal(config.driver, "com_broker");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client durations and sizes follow the same table of bounds", () => {
  const cases: [string, RegExp][] = [
    [
      "NEW_SESSION_TIMEOUT=2h",
      /^smartclient\.ini:8: NEW_SESSION_TIMEOUT is out of range: expected 100ms to 1h, got "2h"$/,
    ],
    ["HANDSHAKE_TIMEOUT=1ms", /HANDSHAKE_TIMEOUT is out of range: expected 100ms to 10m, got "1ms"/],
    ["REPLAY_BUFFER_SIZE=1K", /REPLAY_BUFFER_SIZE is out of range: expected 64K to 1G, got "1K"/],
    ["LOG_MAX_SIZE=1K", /LOG_MAX_SIZE is out of range: expected 64K to 1024G, got "1K"/],
  ];
  for (const [line, expected] of cases) {
    throws(() => parse([...base, "BrokerServer=a:1", line]), configError(expected), line);
  }
});

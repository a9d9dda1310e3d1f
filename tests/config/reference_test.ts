/**
 * docs/configuration.md's key lists against the code: the keys the parsers
 * read, the defaults they apply, and what `--help` says.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { parseIni } from "../../src/config/ini.ts";
import { SectionReader } from "../../src/config/section.ts";
import { serverConfigFromIni } from "../../src/config/server_config.ts";
import { clientConfigFromIni } from "../../src/config/client_config.ts";
import { docSection, type KeyItem, keyItems, statedDefaults } from "../helpers/docs.ts";

const SERVER_FILE = [
  "[GENERAL]",
  "CONSOLELOG=1",
  "[BALANCE_SMART_CLIENT_DESKTOP]",
  "LOCAL_SERVER_PORT=4000",
  "REMOTE_SERVER_01=127.0.0.1 5000",
];
const CLIENT_FILE = [
  "[drivers]",
  "active=com_broker",
  "[com_broker]",
  "server=127.0.0.1",
  "port=4000",
  "BrokerProxy=1",
  "BrokerServer=127.0.0.1:4001",
];

const parseServer = (lines: string[]) => serverConfigFromIni(parseIni(lines.join("\n"), "/etc/broker/appserver.ini"));
const parseClient = (lines: string[]) => clientConfigFromIni(parseIni(lines.join("\n"), "/opt/sc/smartclient.ini"));

const serverItems = async () =>
  keyItems(await docSection("configuration.md", "## Configuration: appserver.ini", "`[GENERAL] CONSOLELOG=1`"));
const clientItems = async () =>
  keyItems(await docSection("configuration.md", "## Configuration: smartclient.ini", "Smart Client's own keys"));

/** The keys (lower case; a prefix as `prefix<suffix>`) that `parses` ask a SectionReader for. */
function keysRead(...parses: (() => unknown)[]): string[] {
  const read = new Set<string>();
  const { entry, prefixed } = SectionReader.prototype;
  SectionReader.prototype.entry = function (key) {
    read.add(key.toLowerCase());
    return entry.call(this, key);
  };
  SectionReader.prototype.prefixed = function (prefix) {
    read.add(`${prefix.toLowerCase()}<suffix>`);
    return prefixed.call(this, prefix);
  };
  try {
    for (const parse of parses) parse();
  } finally {
    SectionReader.prototype.entry = entry;
    SectionReader.prototype.prefixed = prefixed;
  }
  return [...read].sort();
}

const documentedKeys = (items: KeyItem[]) => items.flatMap((item) => item.keys).map((k) => k.toLowerCase()).sort();

Deno.test("the keys broker-server reads are the keys of docs/configuration.md's appserver.ini list", async () => {
  const documented = documentedKeys(await serverItems());
  ok(documented.length > 30, `found the key list: ${documented}`);
  // CONSOLELOG is [GENERAL]'s, documented in the sentence that ends the list.
  deepEqual(keysRead(() => parseServer(SERVER_FILE)), [...documented, "consolelog"].sort());
  match(await docSection("configuration.md", "## Configuration: appserver.ini", "### "), /`\[GENERAL\] CONSOLELOG=1`/);
});

Deno.test("the keys broker-client reads are the keys of docs/configuration.md's smartclient.ini list", async () => {
  const documented = documentedKeys(await clientItems());
  ok(documented.length > 15, `found the key list: ${documented}`);
  // [drivers] active= is the section's name, documented above the list. Both layouts: LISTEN_PORT is layout 2's.
  const read = keysRead(
    () => parseClient(CLIENT_FILE),
    () =>
      parseClient(["[drivers]", "active=com_broker", "[com_broker]", "server=10.0.0.5", "port=4000", "BrokerProxy=1"]),
  );
  deepEqual(read, [...documented, "active"].sort());
});

/** Checks that writing each default `items` state into the file parses to the same configuration as leaving it out. */
function checkDefaults(items: KeyItem[], file: string[], parse: (lines: string[]) => unknown): string[] {
  const plain = parse(file);
  const checked: string[] = [];
  for (const item of items) {
    const defaults = statedDefaults(item);
    if (!defaults) continue;
    item.keys.forEach((key, i) => {
      const line = `${key}=${defaults[i]}`;
      deepEqual(parse([...file, line]), plain, `docs/configuration.md: ${line} is not the default`);
      checked.push(key);
    });
  }
  return checked;
}

Deno.test("the defaults docs/configuration.md states are the code's: writing them into the file changes nothing", async () => {
  const server = checkDefaults(await serverItems(), SERVER_FILE, parseServer);
  ok(server.length >= 25, `appserver.ini defaults checked: ${server}`);
  const client = checkDefaults(await clientItems(), CLIENT_FILE, parseClient);
  ok(client.length >= 10, `smartclient.ini defaults checked: ${client}`);
  // And a value that is not the default does change the configuration.
  ok(
    JSON.stringify(parseServer([...SERVER_FILE, "HEARTBEAT_INTERVAL=3s"])) !== JSON.stringify(parseServer(SERVER_FILE)),
  );
});

/** `--help` of `entry`. */
async function help(entry: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", entry, "--help"], stdout: "piped" })
    .output();
  equal(out.code, 0);
  return new TextDecoder().decode(out.stdout);
}

/**
 * The defaults `--help` states for keys described on a line of their own:
 * `  KEY    text (default 2 s; ...)`, continuation lines included.
 */
function helpDefaults(text: string): [key: string, value: string][] {
  const found: [string, string][] = [];
  let key: string | null = null;
  let entry = "";
  const flush = () => {
    const m = /\(default ([^;),\s]+(?: s\b)?)/.exec(entry);
    if (key && m) found.push([key, (m[1] as string).replace(" ", "")]);
  };
  for (const line of text.split("\n")) {
    const start = /^ {2}([A-Za-z][A-Za-z_]+)(?:=\S+)?\s{2,}(.*)$/.exec(line);
    if (start) {
      flush();
      [key, entry] = [start[1] as string, start[2] as string];
    } else if (key && /^\s{20,}\S/.test(line)) {
      entry += " " + line.trim();
    } else {
      flush();
      key = null;
    }
  }
  flush();
  return found;
}

for (const program of ["server", "client"] as const) {
  Deno.test(`broker-${program} --help names every key of docs/configuration.md, with the same defaults`, async () => {
    const text = await help(`${program}.ts`);
    const items = program === "server" ? await serverItems() : await clientItems();
    for (const key of items.flatMap((item) => item.keys)) {
      const name = key.replace("<suffix>", "");
      match(text, new RegExp(`(?<![A-Za-z_])${name}(?![A-Za-z_])`), `--help does not name ${key}`);
    }
    const stated = helpDefaults(text);
    ok(stated.length >= (program === "server" ? 10 : 4), `defaults found in --help: ${stated}`);
    const [file, parse] = program === "server" ? [SERVER_FILE, parseServer] : [CLIENT_FILE, parseClient];
    const plain = parse(file);
    for (const [key, value] of stated) {
      deepEqual(parse([...file, `${key}=${value}`]), plain, `--help: ${key}=${value} is not the default`);
    }
  });
}

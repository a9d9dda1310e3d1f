import { deepEqual, equal } from "node:assert/strict";
import { decodeIniBytes, parseIni } from "../../src/config/ini.ts";

Deno.test("sections and keys are case-insensitive; values lose quotes and inline comments", () => {
  const doc = parseIni(
    [
      "[General]",
      "ConsoleLog=1",
      "[balance_smart_client_desktop]",
      "  Local_Server_Port = 4000   ; the port",
      'SERVICE_DISPLAY_NAME = "BROKER SERVICE" ',
      'QUOTED = "a ; b" ; comment after quotes',
      "PATH = C:\\totvs\\broker",
      "# hash comment",
      "EMPTY =",
    ].join("\n"),
    "x.ini",
  );
  const section = doc.sections.get("balance_smart_client_desktop");
  deepEqual(
    section?.entries.map((e) => [e.key, e.value, e.line]),
    [
      ["Local_Server_Port", "4000", 4],
      ["SERVICE_DISPLAY_NAME", "BROKER SERVICE", 5],
      ["QUOTED", "a ; b", 6],
      ["PATH", "C:\\totvs\\broker", 7],
      ["EMPTY", "", 9],
    ],
  );
  equal(doc.sections.get("general")?.entries[0]?.value, "1");
});

Deno.test("CRLF, a UTF-8 BOM and Latin-1 comments load", () => {
  const latin1 = new Uint8Array([
    ...new TextEncoder().encode("; porta onde este broker server atende pedidos de conex"),
    0xe3, // "ã" in Latin-1, invalid as UTF-8
    ...new TextEncoder().encode("o\r\n[S]\r\nK = v\r\n"),
  ]);
  const text = decodeIniBytes(latin1);
  equal(text.includes("conexão"), true);
  equal(parseIni(text, "a.ini").sections.get("s")?.entries[0]?.value, "v");
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode("[S]\r\nK=é\r\n")]);
  const doc = parseIni(decodeIniBytes(bom), "b.ini");
  deepEqual(doc.sections.get("s")?.entries.map((e) => [e.key, e.value, e.line]), [["K", "é", 2]]);
});

Deno.test("repeated section headers merge; lines that are not keys are kept for the reader to judge", () => {
  const doc = parseIni("[A]\nx=1\n[B]\ny=2\n[a]\nz=3\njunk line\n", "c.ini");
  deepEqual(doc.sections.get("a")?.entries.map((e) => e.key), ["x", "z"]);
  deepEqual(doc.sections.get("a")?.malformed, [{ line: 7, text: "junk line" }]);
  equal(doc.sections.get("a")?.line, 1);
});

/** The lines' values, as parsed from one section `[S]` holding them. */
function values(...lines: string[]): string[] {
  const doc = parseIni(["[S]", ...lines].join("\r\n"), "v.ini");
  return doc.sections.get("s")?.entries.map((e) => e.value) ?? [];
}

Deno.test("values are read as written: # and ; inside a value, backslashes and = are kept", () => {
  deepEqual(
    values(
      "LOG_FILE=\\\\nas\\logs\\broker.log",
      "LOG_FILE = C:\\TOTVS\\logs\\",
      "STATUS_ACCESS_KEY=abcdefghijkl#mnopqrstu",
      "ADMISSION_KEY=k3y;with;semicolons#and#hashes",
      "value=with=equals",
      'SERVICE_DISPLAY_NAME = "C:\\\\quoted\\\\backslashes"',
      "URL = http://x/#anchor",
    ),
    [
      "\\\\nas\\logs\\broker.log",
      "C:\\TOTVS\\logs\\",
      "abcdefghijkl#mnopqrstu",
      "k3y;with;semicolons#and#hashes",
      "with=equals",
      "C:\\\\quoted\\\\backslashes",
      "http://x/#anchor",
    ],
  );
});

Deno.test("a comment starts at ; or # at the start of a line or after a space or tab", () => {
  const doc = parseIni(
    [
      "; comment",
      "  # indented comment",
      "[S] ; header comment",
      "PORT=1234 ; comment",
      "PORT2=1234\t# tab then comment",
      "EMPTY = ; only a comment",
      'QUOTED = "a #b ;c" # comment after quotes',
      "'SINGLE' = 'x ; y'",
      'HALF = "not closed ; cut here',
      'TRAILING = "a" b',
      "\t; indented with a tab",
    ].join("\n"),
    "c.ini",
  );
  deepEqual(
    doc.sections.get("s")?.entries.map((e) => [e.key, e.value, e.line]),
    [
      ["PORT", "1234", 4],
      ["PORT2", "1234", 5],
      ["EMPTY", "", 6],
      ["QUOTED", "a #b ;c", 7],
      ["'SINGLE'", "x ; y", 8],
      ["HALF", '"not closed', 9],
      ["TRAILING", '"a" b', 10],
    ],
  );
  deepEqual(doc.sections.get("s")?.malformed, []);
});

Deno.test("CRLF line ends, a UTF-8 BOM and a header on the first line", () => {
  const bytes = new Uint8Array([
    0xef,
    0xbb,
    0xbf,
    ...new TextEncoder().encode("[S]\r\nLOG_FILE=\\\\nas\\x.log\r\nK = a=b ; c\r\n"),
  ]);
  const doc = parseIni(decodeIniBytes(bytes), "crlf.ini");
  deepEqual(doc.sections.get("s")?.entries.map((e) => [e.key, e.value, e.line]), [
    ["LOG_FILE", "\\\\nas\\x.log", 2],
    ["K", "a=b", 3],
  ]);
});

/** `text` as UTF-16 bytes, little- or big-endian, with or without a byte-order mark. */
function utf16(text: string, options: { bigEndian: boolean; bom: boolean }): Uint8Array {
  const units = [...(options.bom ? [0xfeff] : []), ...Array.from(text, (c) => c.charCodeAt(0))];
  const bytes = new Uint8Array(units.length * 2);
  const view = new DataView(bytes.buffer);
  units.forEach((u, i) => view.setUint16(i * 2, u, !options.bigEndian));
  return bytes;
}

Deno.test('UTF-16 (Notepad\'s "Unicode"), little- or big-endian, with or without BOM, is decoded', () => {
  const text = "; conexão\r\n[S]\r\nK = ação\r\n";
  for (const bigEndian of [false, true]) {
    for (const bom of [true, false]) {
      const decoded = decodeIniBytes(utf16(text, { bigEndian, bom }));
      equal(decoded, text, `bigEndian ${bigEndian}, bom ${bom}`);
    }
  }
});

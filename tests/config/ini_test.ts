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

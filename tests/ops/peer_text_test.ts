import { equal } from "node:assert/strict";
import { PEER_TEXT_MAX_CHARS, peerText } from "../../src/ops/peer_text.ts";
import {
  decodeGoAway,
  decodeReject,
  decodeText,
  encodeAbort,
  encodeGoAway,
  encodeReject,
  FRAME_HEADER_SIZE,
  RejectCode,
} from "../../src/protocol/frames.ts";

Deno.test("peer text: control, separator and bidi characters become visible escapes; ordinary text is kept", () => {
  equal(peerText("bye\n[ERR] forged\r\t\x00\x1b[31m\x7f\x85"), "bye\\n[ERR] forged\\r\\t\\x00\\x1b[31m\\x7f\\x85");
  equal(peerText("a\u2028b\u2029c\u202eevil\u2066\ufeff"), "a\\u2028b\\u2029c\\u202eevil\\u2066\\ufeff");
  const ordinary = 'Sessão encerrada: "usuário" C:\\TOTVS\\bin; 100% ok — 日本';
  equal(peerText(ordinary), ordinary);
  equal(peerText(peerText("x\ny")), "x\\ny", "escaping twice changes nothing");
});

Deno.test("peer text: cut at the cap, escapes included, saying how long it was", () => {
  equal(PEER_TEXT_MAX_CHARS, 200);
  equal(peerText("x".repeat(200)), "x".repeat(200));
  equal(peerText("x".repeat(1 << 20)), `${"x".repeat(200)}… (1048576 characters)`);
  equal(peerText("\n".repeat(150)), `${"\\n".repeat(100)}… (150 characters)`, "escapes count toward the cap");
  equal(peerText("é".repeat(100) + "😀".repeat(100)), `${"é".repeat(100)}${"😀".repeat(50)}… (300 characters)`);
  equal(peerText("ab\ncd", { maxChars: 3 }), "ab… (5 characters)", "an escape is not cut in half");
  equal(peerText("a\n".repeat(500), { maxChars: Infinity }), "a\\n".repeat(500));
});

Deno.test("ABORT reasons decode as safe text within the cap; broker-server's REJECT and GOAWAY reasons keep 1,000 characters", () => {
  const abort = encodeAbort(`bye\n${"z".repeat(999)}`).subarray(FRAME_HEADER_SIZE);
  equal(decodeText(abort), `bye\\n${"z".repeat(195)}… (1000 characters)`, "the encoder sent 1,000");
  const many = Array.from(
    { length: 8 },
    (_, i) => `REMOTE_SERVER_0${i}: Cannot connect to 172.16.50.42:500${i}: refused`,
  );
  const refusal = `No ERP server accepted the connection (${many.join("; ")})`;
  equal(decodeReject(encodeReject(RejectCode.NoBackend, refusal).subarray(FRAME_HEADER_SIZE)).reason, refusal);
  const long = encodeReject(RejectCode.Protocol, `no\n${"y".repeat(2000)}`).subarray(FRAME_HEADER_SIZE);
  equal(decodeReject(long).reason, `no\\n${"y".repeat(996)}… (1000 characters)`, "the encoder sent 1,000");
  const goAway = encodeGoAway(1000, "stop\x1b[2J").subarray(FRAME_HEADER_SIZE);
  equal(decodeGoAway(goAway).reason, "stop\\x1b[2J");
});

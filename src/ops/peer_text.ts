/**
 * Text that came from the network (a peer's ABORT, REJECT or GOAWAY reason,
 * an error message that quotes what a peer sent), made safe for one log
 * line: control characters and the other characters that can forge or hide
 * a line in a file or a terminal are shown as visible escapes, and the text
 * is capped, saying how long it was. Pure.
 * @module
 */

/** Most characters of peer text kept, escapes included (the rest is cut, and the length said). */
export const PEER_TEXT_MAX_CHARS = 200;

/** Options of peerText. */
export interface PeerTextOptions {
  /** Most characters kept (default PEER_TEXT_MAX_CHARS); Infinity escapes without capping. */
  maxChars?: number;
}

/**
 * C0 and C1 controls, DEL, the Unicode line and paragraph separators, and
 * the bidirectional and invisible formatting characters (which can make a
 * line read as something else in a terminal or an editor).
 */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/;

const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function escape(char: string): string {
  const code = char.charCodeAt(0);
  return NAMED[char] ?? (code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16)}`);
}

/**
 * `text` as one safe log line: `\n`, `\r`, `\t`, `\x1b`, `\u2028`... instead
 * of the characters themselves, cut after `maxChars` characters with
 * "… (N characters)" saying how long it was. Text already made safe passes
 * unchanged (backslashes are not escaped), and so does ordinary text,
 * accents and quotes included.
 */
export function peerText(text: string, options: PeerTextOptions = {}): string {
  const max = options.maxChars ?? PEER_TEXT_MAX_CHARS;
  if (text.length <= max && !UNSAFE.test(text)) return text;
  let out = "";
  for (const char of text) { // by code point: a cut never splits a surrogate pair
    const piece = UNSAFE.test(char) ? escape(char) : char;
    if (out.length + piece.length > max) return `${out}… (${text.length} characters)`;
    out += piece;
  }
  return out;
}

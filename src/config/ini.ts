/**
 * Reads TOTVS-style INI files (appserver.ini, smartclient.ini) as written on
 * Windows, with every value read as written:
 *
 * - encodings: UTF-8 or Latin-1 (Windows-1252), with or without BOM; UTF-16
 *   (Notepad's "Unicode"), little- or big-endian; CRLF, LF or CR line ends;
 * - `[section]` headers and keys are case-insensitive;
 * - a comment starts at `;` or `#` at the start of a line, or after a space
 *   or tab in a value: `PORT = 4000 ; comment`. Elsewhere `;` and `#` are part
 *   of the value (`ADMISSION_KEY=abc#def` keeps all seven characters);
 * - backslashes are literal (`\\nas\logs\broker.log` stays a UNC path), and
 *   a value may contain `=` (only the first `=` ends the key);
 * - a value in matching quotes (`"..."` or `'...'`) loses them and keeps
 *   everything inside, spaces, `;` and `#` included.
 *
 * Every occurrence of a key is kept with its line, so that duplicates can be
 * reported instead of silently resolved.
 * @module
 */

/** One `key = value` line of an INI file. */
export interface IniEntry {
  /** The key as written in the file. */
  key: string;
  /** The decoded value: unquoted, inline comment removed, trimmed. */
  value: string;
  /** 1-based line number in the file. */
  line: number;
}

/** One `[section]` with its entries in file order. */
export interface IniSection {
  /** The section name as first written in the file. */
  name: string;
  /** 1-based line of the (first) section header. */
  line: number;
  /** Every entry of the section (and of repeated headers), in file order. */
  entries: IniEntry[];
  /** Lines of the section that are neither comments nor `key = value`. */
  malformed: { line: number; text: string }[];
}

/** A parsed INI file; sections are keyed by lower-cased name. */
export interface IniDocument {
  /** Path the text came from, for messages. */
  path: string;
  /** Sections by lower-cased name. */
  sections: Map<string, IniSection>;
}

/** Raised for a file that cannot be read or parsed; carries the location. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Decodes file bytes: UTF-16 by its byte-order mark (or, without one, by the
 * zero bytes that ASCII text has in UTF-16 and never in an INI file), else
 * UTF-8 without its BOM, else Windows-1252 (Latin-1 comments saved by Notepad).
 */
export function decodeIniBytes(bytes: Uint8Array): string {
  const utf16 = utf16Encoding(bytes);
  if (utf16) return new TextDecoder(utf16, { ignoreBOM: false }).decode(bytes);
  let body = bytes;
  if (body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf) {
    body = body.subarray(3);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(body);
  } catch {
    return new TextDecoder("windows-1252").decode(body);
  }
}

function utf16Encoding(bytes: Uint8Array): "utf-16le" | "utf-16be" | null {
  const [first, second] = bytes;
  if (first === undefined || second === undefined) return null;
  if (first === 0xff && second === 0xfe) return "utf-16le";
  if (first === 0xfe && second === 0xff) return "utf-16be";
  // An INI file starts with ASCII ("[", ";", a letter, a space): in UTF-16
  // that is one zero byte and one non-zero byte.
  if (first !== 0 && second === 0) return "utf-16le";
  if (first === 0 && second !== 0) return "utf-16be";
  return null;
}

/**
 * Decodes one raw value (the text after the first `=`): a comment that
 * starts after a space or tab is dropped, the rest trimmed, and matching
 * quotes around the whole value removed.
 */
function decodeValue(raw: string): string {
  const text = raw.trim();
  const quote = text[0];
  if (quote === '"' || quote === "'") {
    const end = text.indexOf(quote, 1);
    if (end > 0) {
      const rest = text.slice(end + 1);
      if (rest.trim() === "" || /^\s+[;#]/.test(rest)) return text.slice(1, end);
    }
  }
  const comment = /\s[;#]/.exec(raw);
  return (comment ? raw.slice(0, comment.index) : raw).trim();
}

/** Parses INI text; `path` is only used in messages. */
export function parseIni(text: string, path: string): IniDocument {
  const sections = new Map<string, IniSection>();
  let current: IniSection | undefined;
  const lines = text.split(/\r\n|\r|\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = (lines[i] ?? "").trim();
    if (line === "" || line.startsWith(";") || line.startsWith("#")) continue;
    const close = line.startsWith("[") ? line.indexOf("]") : -1;
    if (close > 0) {
      const name = line.slice(1, close).trim();
      const id = name.toLowerCase();
      current = sections.get(id);
      if (!current) {
        current = { name, line: lineNo, entries: [], malformed: [] };
        sections.set(id, current);
      }
      continue;
    }
    if (!current) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) {
      // Kept, not thrown: only the sections we use are ours to judge, and a
      // real appserver.ini has many others.
      current.malformed.push({ line: lineNo, text: line });
      continue;
    }
    current.entries.push({
      key: line.slice(0, eq).trim(),
      value: decodeValue(line.slice(eq + 1)),
      line: lineNo,
    });
  }
  return { path, sections };
}

/** Reads and parses an INI file, turning I/O failures into a ConfigError. */
export async function readIniFile(path: string): Promise<IniDocument> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new ConfigError(`Cannot read configuration file "${path}": file not found`);
    }
    throw new ConfigError(
      `Cannot read configuration file "${path}": ${(err as Error).message}`,
    );
  }
  return parseIni(decodeIniBytes(bytes), path);
}

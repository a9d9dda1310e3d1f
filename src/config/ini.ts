/**
 * Reads TOTVS-style INI files (appserver.ini, smartclient.ini) as written on
 * Windows: UTF-8 or Latin-1, optional BOM, CRLF line ends, `;` comments,
 * case-insensitive section and key names, quoted values. Values are decoded
 * by the `ini` package; this module adds what it lacks for us: line numbers
 * for error messages and every occurrence of a key, so duplicates can be
 * reported instead of silently resolved.
 * @module
 */

import ini from "ini";

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
 * Decodes file bytes: strips a UTF-8 BOM and falls back to Windows-1252 when
 * the bytes are not valid UTF-8 (Latin-1 comments saved by Notepad).
 */
export function decodeIniBytes(bytes: Uint8Array): string {
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

/** Decodes one raw value: quotes removed, inline `;`/`#` comment dropped. */
function decodeValue(raw: string): string {
  const trimmed = raw.trim();
  const quote = trimmed[0];
  if (quote === '"' || quote === "'") {
    // A quoted value may be followed by a comment, which `ini` does not allow.
    const end = trimmed.indexOf(quote, 1);
    if (end > 0) {
      const rest = trimmed.slice(end + 1).trim();
      if (rest === "" || rest.startsWith(";") || rest.startsWith("#")) {
        return trimmed.slice(1, end);
      }
    }
  }
  return ini.unsafe(trimmed);
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

/**
 * Typed access to one INI section with the bookkeeping that good messages
 * need: every key read is remembered (so unknown keys can be reported with
 * their line), duplicates are reported with the line that wins, and parse
 * failures name file, line, key and what was expected.
 * @module
 */

import { ConfigError, type IniDocument, type IniEntry, type IniSection } from "./ini.ts";

/**
 * Keys whose values are secrets: no message ever shows them (a duplicate
 * warning during a key rotation would otherwise print both keys to the log).
 */
export const SECRET_KEYS: readonly string[] = ["ADMISSION_KEY", "STATUS_ACCESS_KEY", "CLUSTER_KEY"];

/** Tells whether `key` (any case) holds a secret. */
export function isSecretKey(key: string): boolean {
  return SECRET_KEYS.includes(key.trim().toUpperCase());
}

const SECRET_NAME = new RegExp(SECRET_KEYS.join("|"), "i");

/**
 * A line that is not `KEY = value`, shown in a message. Hidden when it may
 * hold a secret: past its first word when it names a secret key (quoted or
 * not), and whole when it follows a secret key's line (a long key that a
 * mail or an editor wrapped onto the next line).
 */
function quoteMalformed(text: string, afterSecret: boolean): string {
  if (afterSecret) return "(hidden: it follows a secret key's line, and may be the rest of its value)";
  const word = /^[^\s:=]+/.exec(text)?.[0] ?? "";
  if (word !== text && SECRET_NAME.test(word)) return `"${word}..." (the rest hidden: secret)`;
  return SECRET_NAME.test(text) ? "a line naming a secret key (hidden)" : `"${text}"`;
}

/** Reads keys of one section; collects warnings into the given array. */
export class SectionReader {
  #doc: IniDocument;
  #section: IniSection;
  #warnings: string[];
  #known = new Set<string>();
  #knownPrefixes: string[] = [];
  #reported = new Set<number>();

  /** Wraps `section` of `doc`; warnings are appended to `warnings`. */
  constructor(doc: IniDocument, section: IniSection, warnings: string[]) {
    this.#doc = doc;
    this.#section = section;
    this.#warnings = warnings;
    for (const bad of section.malformed) {
      const before = section.entries.filter((e) => e.line < bad.line).at(-1);
      const afterSecret = before !== undefined && isSecretKey(before.key);
      throw this.error(
        bad.line,
        `Cannot parse line in [${section.name}]: expected "KEY = value", got ${quoteMalformed(bad.text, afterSecret)}`,
      );
    }
  }

  /** The section name as written in the file. */
  get name(): string {
    return this.#section.name;
  }

  /** Builds a ConfigError located at `line` of this file. */
  error(line: number | undefined, message: string): ConfigError {
    const where = line === undefined ? this.#doc.path : `${this.#doc.path}:${line}`;
    return new ConfigError(`${where}: ${message}`);
  }

  /** Adds a warning located at `line` of this file. */
  warn(line: number | undefined, message: string): void {
    const where = line === undefined ? this.#doc.path : `${this.#doc.path}:${line}`;
    this.#warnings.push(`${where}: ${message}`);
  }

  /**
   * The entry for `key` (case-insensitive), or undefined. When the key is
   * repeated the first one wins, as with Windows' GetPrivateProfileString
   * that TOTVS files are written for, and the others are reported.
   */
  entry(key: string): IniEntry | undefined {
    const id = key.toLowerCase();
    this.#known.add(id);
    const matches = this.#section.entries.filter((e) => e.key.toLowerCase() === id);
    this.#reportDuplicates(matches);
    return matches[0];
  }

  /** Every entry whose key starts with `prefix` (case-insensitive), first occurrence of each. */
  prefixed(prefix: string): IniEntry[] {
    const lower = prefix.toLowerCase();
    this.#knownPrefixes.push(lower);
    const byKey = new Map<string, IniEntry[]>();
    for (const e of this.#section.entries) {
      const id = e.key.toLowerCase();
      if (!id.startsWith(lower)) continue;
      byKey.set(id, [...(byKey.get(id) ?? []), e]);
    }
    return [...byKey.values()].map((matches) => {
      this.#reportDuplicates(matches);
      return matches[0] as IniEntry;
    });
  }

  /**
   * Parses `key` with `parse`, or returns `fallback` when the key is absent.
   * Parse errors become ConfigErrors naming the file, line and key.
   */
  value<T>(key: string, parse: (text: string) => T, fallback: T): T {
    const found = this.entry(key);
    if (!found) return fallback;
    return this.parseEntry(found, parse);
  }

  /** Parses one entry with `parse`, naming file, line and key on failure. */
  parseEntry<T>(found: IniEntry, parse: (text: string) => T): T {
    try {
      return parse(found.value);
    } catch (err) {
      const message = (err as Error).message;
      const shown = isSecretKey(found.key) && found.value !== ""
        ? message.replaceAll(found.value, "(hidden)")
        : message;
      throw this.error(found.line, `Cannot parse ${found.key}: ${shown}`);
    }
  }

  /** Entries whose key was never asked for: each gets a warning unless `quiet` says otherwise. */
  reportUnknownKeys(quiet: (key: string) => boolean = () => false): void {
    for (const e of this.#section.entries) {
      const id = e.key.toLowerCase();
      if (this.#known.has(id) || this.#knownPrefixes.some((p) => id.startsWith(p))) continue;
      if (quiet(id)) continue;
      this.warn(e.line, `Unknown key ${e.key} in [${this.#section.name}] is ignored`);
    }
  }

  #reportDuplicates(matches: IniEntry[]): void {
    const [first, ...rest] = matches;
    if (!first) return;
    for (const dup of rest) {
      if (this.#reported.has(dup.line)) continue;
      this.#reported.add(dup.line);
      const where = `Duplicate key ${dup.key} in [${this.#section.name}]: the first one (line ${first.line}`;
      this.warn(
        dup.line,
        isSecretKey(dup.key)
          ? `${where}) wins, this one is ignored (values hidden: secret)`
          : `${where}, "${first.value}") wins, this one ("${dup.value}") is ignored`,
      );
    }
  }
}

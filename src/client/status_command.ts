/**
 * `broker-client --status`: asks the broker-client that runs with the same
 * smartclient.ini for its status.json (on 127.0.0.1:STATUS_PORT), prints it
 * for a helpdesk call, and says by its exit code whether all is well.
 * @module
 */

import type { ClientConfig } from "../config/client_config.ts";
import { formatHostPort } from "../config/values.ts";
import { peerText } from "../ops/peer_text.ts";
import { allAttached, type ClientStatus, statusText } from "./status.ts";

/** Exit codes of `--status`. */
export const StatusExit = {
  /** broker-client runs and every session is attached (or there is none). */
  attached: 0,
  /** A session is reconnecting, or a new one cannot reach a broker server yet. */
  detached: 1,
  /** broker-client is not running, or cannot be asked (no status page, another program on its port). */
  notRunning: 2,
} as const;

/** How long `--status` waits for broker-client's answer (ms). */
export const STATUS_TIMEOUT_MS = 3_000;

/**
 * Most bytes of status.json `--status` reads: far above any broker-client's
 * (a few KiB per session), far below what would tax the helpdesk's PC.
 */
export const STATUS_MAX_BYTES = 4 * 1024 * 1024;

/** Options of statusCommand. */
export interface StatusCommandOptions {
  /** Where the report goes; default console.log. */
  print?: (text: string) => void;
  /** How long to wait for the answer (ms); default STATUS_TIMEOUT_MS. */
  timeoutMs?: number;
}

/** Why the status could not be had, as a sentence for the console. */
function unreachable(err: unknown, where: string, timeoutMs: number): string {
  const name = (err as Error).name;
  if (name === "TimeoutError" || name === "AbortError") {
    return `${where} did not answer within ${
      timeoutMs / 1000
    } s: broker-client may be stuck, or another program holds the port`;
  }
  // fetch says only "fetch failed"; what happened is in its cause.
  const cause = (err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : "";
  if (/refused/i.test(cause)) {
    return `Nothing answers on ${where}: broker-client is not running (or it runs without its status page: its log says why)`;
  }
  return `Cannot read broker-client's status from ${where}: ${(err as Error).message}${cause ? ` (${cause})` : ""}`;
}

/** The body of `response` as text, or null once it passes `maxBytes` (the rest is not read). */
async function cappedText(response: Response, maxBytes: number): Promise<string | null> {
  if (!response.body) return "";
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of response.body) {
    length += chunk.length;
    if (length > maxBytes) {
      await response.body.cancel().catch(() => {});
      return null;
    }
    chunks.push(chunk);
  }
  const all = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder().decode(all);
}

/** status.json from `url`, or the sentence saying why not. */
async function fetchStatus(url: string, where: string, timeoutMs: number): Promise<ClientStatus | string> {
  let text: string | null;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    text = await cappedText(response, STATUS_MAX_BYTES);
    if (text === null) {
      return `${where} answered more than ${STATUS_MAX_BYTES / 1024 / 1024} MiB: it is not broker-client's status page`;
    }
    if (!response.ok) return `${where} answered HTTP ${response.status}: it is not broker-client's status page`;
  } catch (err) {
    return unreachable(err, where, timeoutMs);
  }
  try {
    const status = JSON.parse(text) as ClientStatus;
    if (status?.program === "broker-client" && Array.isArray(status.sessions)) return status;
  } catch { /* said below */ }
  return `${where} answered, but not as broker-client's status page does: another program holds the port`;
}

/** Runs `--status` for `config`; resolves to its exit code (StatusExit). */
export async function statusCommand(config: ClientConfig, options: StatusCommandOptions = {}): Promise<number> {
  // What another program on the port sends must not reach the console as escape sequences.
  const print = (text: string) =>
    (options.print ?? console.log)(text.split("\n").map((line) => peerText(line, { maxChars: Infinity })).join("\n"));
  const timeoutMs = options.timeoutMs ?? STATUS_TIMEOUT_MS;
  if (config.statusPort === 0) {
    print(`broker-client's status page is off (STATUS_PORT=0 in ${config.path}): set a port there to use --status`);
    return StatusExit.notRunning;
  }
  const where = `127.0.0.1:${config.statusPort}`;
  const status = await fetchStatus(`http://${where}/status.json`, where, timeoutMs);
  if (typeof status === "string") {
    print(status);
    return StatusExit.notRunning;
  }
  const ours = formatHostPort(config.listen);
  if (status.listen !== ours) {
    // Two broker-clients on one machine (a terminal server): the other took the port first.
    print(
      `The broker-client answering on ${where} is another one (process ${status.pid}, Smart Client connects to ${status.listen}, configuration ${status.config}).\n` +
        `The one for ${config.path} (Smart Client connects to ${ours}) is not running, or runs without its status page (its log says why): give each its own STATUS_PORT`,
    );
    return StatusExit.notRunning;
  }
  let report: string;
  let attached: boolean;
  try {
    report = statusText(status);
    attached = allAttached(status);
  } catch {
    // Fields missing or of another type: thrown out of here, the program would exit 1 ("detached").
    print(`${where} answered, but not as broker-client's status page does: another program holds the port`);
    return StatusExit.notRunning;
  }
  print(report);
  return attached ? StatusExit.attached : StatusExit.detached;
}

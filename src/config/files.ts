/**
 * The files a configuration names (TLS certificate, key and CA, the log
 * folder), opened and parsed the way the program uses them. `--check` and a
 * real start call the same functions, so a file that would stop the program
 * also makes `--check` fail, with the key and the file named.
 * @module
 */

import { dirname } from "node:path";
import type { ClientConfig } from "./client_config.ts";
import { ConfigError } from "./ini.ts";
import type { ServerConfig } from "./server_config.ts";

function reason(err: unknown): string {
  if (err instanceof Deno.errors.NotFound) return "file not found";
  if (err instanceof Deno.errors.PermissionDenied) return "permission denied";
  return (err as Error).message;
}

function readFile(configPath: string, key: string, file: string): string {
  try {
    return Deno.readTextFileSync(file);
  } catch (err) {
    throw new ConfigError(`${configPath}: Cannot read ${key} "${file}": ${reason(err)}`);
  }
}

/**
 * Reads LINK_TLS_CERT and LINK_TLS_KEY and has the TLS library parse them
 * (a trial listener on 127.0.0.1, port 0, closed at once): a file that holds
 * no certificate, no key, or a key of another certificate is refused here.
 */
export function checkServerTlsFiles(config: ServerConfig): void {
  const tls = config.tls;
  if (!tls) return;
  const cert = readFile(config.path, "LINK_TLS_CERT", tls.certFile);
  const key = readFile(config.path, "LINK_TLS_KEY", tls.keyFile);
  try {
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, transport: "tcp", cert, key }).close();
  } catch (err) {
    const message = (err as Error).message;
    const culprit = /no certificates/i.test(message)
      ? `LINK_TLS_CERT "${tls.certFile}"`
      : /no keys|private key/i.test(message)
      ? `LINK_TLS_KEY "${tls.keyFile}"`
      : `LINK_TLS_CERT "${tls.certFile}" with LINK_TLS_KEY "${tls.keyFile}"`;
    throw new ConfigError(`${config.path}: Cannot use ${culprit}: ${message}`);
  }
}

/** Reads LINK_TLS_CA and has the TLS library parse it; it must hold at least one certificate. */
export function checkClientTlsFiles(config: ClientConfig): void {
  const caFile = config.tls?.caFile;
  if (!caFile) return;
  const ca = readFile(config.path, "LINK_TLS_CA", caFile);
  const fail = (why: string) => new ConfigError(`${config.path}: Cannot use LINK_TLS_CA "${caFile}": ${why}`);
  if (!ca.includes("-----BEGIN CERTIFICATE-----")) {
    throw fail(`expected a PEM certificate ("-----BEGIN CERTIFICATE-----"), found none`);
  }
  try {
    Deno.createHttpClient({ caCerts: [ca] }).close();
  } catch (err) {
    throw fail((err as Error).message);
  }
}

/**
 * Checks that LOG_FILE can be written: an existing file is opened for
 * appending; otherwise its nearest existing folder must be a folder we can
 * create files in (a test file is made and removed). Nothing is left behind.
 */
export async function checkLogFile(configPath: string, file: string | null): Promise<void> {
  if (!file) return;
  const fail = (why: string) => new ConfigError(`${configPath}: Cannot write LOG_FILE "${file}": ${why}`);
  try {
    (await Deno.open(file, { append: true })).close();
    return;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw fail(reason(err));
  }
  let folder = dirname(file);
  for (;;) {
    const info = await Deno.stat(folder).catch((err) => err instanceof Deno.errors.NotFound ? null : err);
    if (info instanceof Error) throw fail(`cannot look at "${folder}": ${reason(info)}`);
    if (info) {
      if (!info.isDirectory) throw fail(`"${folder}" is a file, not a folder`);
      break;
    }
    const parent = dirname(folder);
    if (parent === folder) throw fail("no folder of its path exists");
    folder = parent;
  }
  try {
    await Deno.remove(await Deno.makeTempFile({ dir: folder, prefix: ".broker-check-" }));
  } catch (err) {
    throw fail(`cannot create files in "${folder}": ${reason(err)}`);
  }
}

/** Every file broker-server's configuration names: TLS certificate and key, log file. */
export async function checkServerFiles(config: ServerConfig): Promise<void> {
  checkServerTlsFiles(config);
  await checkLogFile(config.path, config.log.file);
}

/** Every file broker-client's configuration names that it cannot do without: the TLS CA. */
export function checkClientFiles(config: ClientConfig): void {
  checkClientTlsFiles(config);
}

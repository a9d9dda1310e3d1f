/**
 * broker-client's command line: arguments, configuration, `--check`, and
 * running until the abort signal (SIGINT/SIGTERM, mapped by the entry file).
 * @module
 */

import {
  answerHelpOrVersion,
  type CliOptions,
  currentExecLocation,
  defaultConfigPath,
  EXIT_FAILURE,
  EXIT_OK,
  parseCli,
  usageFailure,
} from "../cli.ts";
import { type ClientConfig, loadClientConfig } from "../config/client_config.ts";
import { checkClientFiles } from "../config/files.ts";
import { formatDuration, formatHostPort, formatSize } from "../config/values.ts";
import { describeLogSettings, perUserLogFile } from "../config/logging.ts";
import { logger, loggingFrom, setupLoggingWithFallback, teardownLogging } from "../ops/log.ts";
import { aborted, watchConsole } from "../ops/signals.ts";
import { VERSION } from "../version.ts";
import { basename } from "node:path";
import { BrokerClient } from "./client.ts";
import { statusCommand } from "./status_command.ts";

/** The default configuration file name. */
export const CLIENT_CONFIG_FILE = "smartclient.ini";

const USAGE = `broker-client ${VERSION}: resilient broker for TOTVS Protheus (Smart Client side)

Usage: broker-client [options]

Options:
  -c, --config FILE     smartclient.ini to read (default: next to the executable,
                        or the current directory when run with deno run)
      --driver NAME     use section [NAME] instead of [drivers] active=
      --check           validate the configuration and the TLS CA file it
                        names, print the effective settings and exit (0
                        valid, 2 invalid)
      --status          ask the broker-client running with this configuration
                        for its broker servers and sessions, print them and
                        exit: 0 every session attached, 1 a session
                        reconnecting (or not reaching a broker server), 2
                        broker-client not running or not answering
      --console         log informational lines to the console (TOTVS: -d)
      --log-level LEVEL debug, info (default), warning or error
      --log-format FMT  text (default) or json (one JSON object per line)
  -V, --version         print the version
  -h, --help            print this help

smartclient.ini: [drivers] active=<section>, and in that section:
  server, port           where Smart Client connects: with BrokerServer set,
                         this is the local broker-client (a loopback address);
                         without it, the broker server itself, and
                         broker-client listens on 127.0.0.1:<port>
  BrokerProxy=1          required: this connection goes through the broker
  BrokerServer           broker server(s) "host:port", comma-separated; new
                         sessions try them in turn
  LISTEN_ADDRESS         listen elsewhere than the loopback (explicit only)
  LISTEN_PORT            port to listen on when BrokerServer is absent
                         (default: port)
  NEW_SESSION_TIMEOUT    how long a new session keeps trying (default 30 s)
  CONNECT_TIMEOUT        one connection attempt (default 5 s)
  HANDSHAKE_TIMEOUT      one handshake (default 10 s)
  REPLAY_BUFFER_SIZE     unacknowledged bytes kept per session (default 4M)
  LOG_FILE               log file (default broker-client.log beside this file;
                         empty: none); informational lines also go to the
                         console when run from a terminal. If it cannot be
                         opened: the same name in %LOCALAPPDATA%\\protheus-broker
                         (Windows) or $XDG_STATE_HOME/protheus-broker
                         (~/.local/state/protheus-broker), else the console
  ADMISSION_KEY          the broker server's admission key, when it has one
  LINK_TLS=1             TLS on the link, trusting the system's CAs
  LINK_TLS_CA            PEM file of the CA (or certificate) to trust
  LINK_TLS_FINGERPRINT   SHA-256 of the server certificate to pin
  LOG_MAX_SIZE, LOG_FILES  rotate at this size (default 10M), keep N (default 5)
  LOG_LEVEL, LOG_FORMAT  debug/info/warning/error (default info); text or json
  STATUS_PORT            status page and status.json on 127.0.0.1 only, for
                         the helpdesk and --status (default 8405; 0: off)
The resume window, heartbeat and dead-link times come from the broker server.

Exit codes: 0 ok, 1 runtime failure, 2 bad arguments or configuration.
`;

/** The effective settings, as `--check` prints them. */
export function describeClientConfig(config: ClientConfig): string {
  const lines = [
    `Configuration file:  ${config.path}`,
    `Driver section:      [${config.driver}]`,
    `Listening on:        ${formatHostPort(config.listen)} (Smart Client connects here)`,
    `Broker servers (${config.brokerServers.length}):`,
    ...config.brokerServers.map((s) => `  ${formatHostPort(s)}`),
    `New session timeout: ${formatDuration(config.newSessionTimeoutMs)}`,
    `Connect timeout:     ${formatDuration(config.connectTimeoutMs)}`,
    `Handshake timeout:   ${formatDuration(config.handshakeTimeoutMs)}`,
    `Replay buffer cap:   ${formatSize(config.replayBufferBytes)}`,
    `Log:                 ${describeLogSettings(config.log)}`,
    `Link:                ${
      config.tls
        ? `TLS, ${
          config.tls.fingerprint
            ? `pinned to ${config.tls.fingerprint}`
            : config.tls.caFile
            ? `trusting ${config.tls.caFile}`
            : "trusting the system's CAs"
        }`
        : "plain TCP"
    }; admission key ${config.admissionKey ? "set (hidden)" : "not set"}`,
    `Status page:         ${
      config.statusPort === 0 ? "off" : `http://127.0.0.1:${config.statusPort}/ (loopback only; also status.json)`
    }`,
  ];
  for (const n of config.notes) lines.push(`Note: ${n}`);
  for (const w of config.warnings) lines.push(`Warning: ${w}`);
  return lines.join("\n");
}

/** Runs broker-client with `args`; resolves to the process exit code. */
export async function clientMain(args: string[], options: { signal: AbortSignal }): Promise<number> {
  let cli: CliOptions;
  let config: ClientConfig;
  try {
    cli = parseCli(args, { driver: true, status: true });
    const answered = answerHelpOrVersion(cli, "broker-client", USAGE);
    if (answered !== null) return answered;
    config = await loadClientConfig(
      cli.config ?? defaultConfigPath(CLIENT_CONFIG_FILE, currentExecLocation()),
      cli.driver,
    );
    if (!cli.check && !cli.status) checkClientFiles(config);
  } catch (err) {
    return usageFailure(err, "broker-client");
  }
  if (cli.check) return checkOnly(config);
  if (cli.status) return await statusCommand(config);
  return await runClient(config, cli, options.signal);
}

/** --check: prints the configuration as understood and whether its files open. */
function checkOnly(config: ClientConfig): number {
  console.log(describeClientConfig(config));
  try {
    checkClientFiles(config);
  } catch (err) {
    return usageFailure(err, "broker-client");
  }
  console.log("Configuration is valid.");
  return EXIT_OK;
}

/** Runs broker-client until `signal` aborts; resolves to the exit code. */
async function runClient(config: ClientConfig, cli: CliOptions, signal: AbortSignal): Promise<number> {
  // Smart Client's traffic never waits on a log file: beside smartclient.ini
  // (often Program Files, read-only for desktop users), else the user's own
  // folder, else the console alone.
  const fallback = config.log.file
    ? perUserLogFile(basename(config.log.file), { os: Deno.build.os, env: (name) => Deno.env.get(name) })
    : null;
  const logProblem = await setupLoggingWithFallback(
    loggingFrom(config.log, cli.console || Deno.stdout.isTerminal(), cli),
    fallback && fallback !== config.log.file ? [fallback] : [],
  );
  const log = logger("client");
  log.info("broker-client {version} starting with {path}", { version: VERSION, path: config.path });
  if (logProblem) log.warn("{warning}", { warning: logProblem });
  for (const w of config.warnings) log.warn("{warning}", { warning: w });
  await using consoleStop = await watchConsole(true, "broker-client");
  const client = new BrokerClient(config);
  try {
    client.listen();
  } catch (err) {
    log.error("{error}", { error: (err as Error).message });
    return EXIT_FAILURE;
  }
  await aborted(AbortSignal.any([signal, consoleStop.signal]));
  await client.close();
  await teardownLogging();
  consoleStop.finished();
  return EXIT_OK;
}

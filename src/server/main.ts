/**
 * broker-server's command line: arguments, configuration, `--check`, and
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
  EXIT_USAGE,
  isRunFromSource,
  parseCli,
  usageFailure,
} from "../cli.ts";
import { checkServerFiles } from "../config/files.ts";
import { ConfigError } from "../config/ini.ts";
import { loadServerConfig, type ServerConfig } from "../config/server_config.ts";
import { formatDuration, formatHostPort, formatSize } from "../config/values.ts";
import { describeLogSettings } from "../config/logging.ts";
import { descriptorsNeeded, openFileLimit, SERVER_DESCRIPTOR_ADVICE } from "../ops/accept_errors.ts";
import { logger, loggingFrom, setupLogging, teardownLogging } from "../ops/log.ts";
import { aborted, holdHangup, watchConsole } from "../ops/signals.ts";
import { CONSOLE_DRAIN_MS } from "../ops/console_control.ts";
import { VERSION } from "../version.ts";
import { resolve } from "node:path";
import { readServiceName, selfCommand, type ServiceSpec } from "../ops/service.ts";
import { installSystemd, realSystemdHost, uninstallSystemd } from "../ops/systemd.ts";
import { installWindowsService, runAsWindowsService, uninstallWindowsService } from "../ops/windows_service.ts";
import { within } from "../session/transport.ts";
import { watchConfig } from "./reload.ts";
import { BrokerServer } from "./server.ts";
import { announceMainProcess, watchUpgradeSignal } from "./upgrade.ts";

/** The default configuration file name. */
export const SERVER_CONFIG_FILE = "appserver.ini";

/** How long a stop may take beyond DRAIN_TIMEOUT before the program exits anyway. */
const STOP_MARGIN_MS = 10_000;

const USAGE = `broker-server ${VERSION}: resilient broker for TOTVS Protheus (server side)

Usage: broker-server [options]

Options:
  -c, --config FILE     appserver.ini to read (default: next to the executable,
                        or the current directory when run with deno run)
      --check           validate the configuration and the files it names
                        (TLS certificate and key, log folder), print the
                        effective settings and exit (0 valid, 2 invalid)
      --install         install as a service named SERVICE_NAME (Windows:
                        Service Control Manager, run as administrator;
                        Linux: systemd unit, run as root)
      --uninstall       stop and remove that service, if broker-server installed
                        it (only SERVICE_NAME is read from the file)
      --service-name NAME  with --uninstall: remove the service NAME (when
                        appserver.ini cannot be read); with --install: install
                        it as NAME instead of SERVICE_NAME (a second service
                        for an upgrade that keeps sessions: docs/cluster.md)
      --console         log to the console even if CONSOLELOG=0 (TOTVS: -d)
      --log-level LEVEL debug, info (default), warning or error
      --log-format FMT  text (default) or json (one JSON object per line)
  -V, --version         print the version
  -h, --help            print this help

TOTVS spellings accepted: -balance_smart_client_desktop (ignored: this program
is always the broker), -d / -debug / -console (same as --console), -install
and -remove (same as --install and --uninstall).

appserver.ini, section [BALANCE_SMART_CLIENT_DESKTOP]:
  LOCAL_SERVER_PORT      port broker-clients connect to (required)
  LOCAL_SERVER_ADDRESS   address to listen on (default 0.0.0.0, every IPv4
                         interface; "::" for IPv6 too, 127.0.0.1 for loopback)
  REMOTE_SERVER_<xx>     ERP server "host port" (also host:port, [ipv6]:port);
                         one or more, any letters/digits as suffix
  SORT_METHOD            CONNECTION (default) or ROUND_ROBIN
  SERVICE_NAME           service name, no spaces
  SERVICE_DISPLAY_NAME   service display name
  RESUME_TIMEOUT         resume window (default 180 s; "90", "500ms", "3m")
  HEARTBEAT_INTERVAL     heartbeat on quiet links (default 2 s)
  LINK_TIMEOUT           silent link declared dead after (default 6 s)
  HANDSHAKE_TIMEOUT      time a new link has to introduce itself (default 10 s;
                         its hello must come within 2 s)
  UNCONFIRMED_TIMEOUT    how long a new session whose client never confirmed
                         the welcome keeps its ERP connection (default 30 s)
  CONNECT_TIMEOUT        time allowed to connect to an ERP server (default 5 s)
  REPLAY_BUFFER_SIZE     unacknowledged bytes kept per session and direction
                         (default 4M; "512K", "16M")
  HEALTH_CHECK_INTERVAL  TCP connect probe of each ERP server (default 2s;
                         0 disables probes)
  HEALTH_CHECK_RISE      good probes that bring a down server back (default 2)
  HEALTH_CHECK_FALL      failed probes that take a server down (default 3)
  ADMISSION_KEY          shared secret broker-clients must prove (16+ chars)
  LINK_TLS_CERT, LINK_TLS_KEY  TLS on the link: PEM certificate and key files
  CLUSTER_KEY            secret shared by the site's broker-servers (16+ chars):
                         resumes reach the holder of their session, and a new
                         process takes over without ending sessions
  CLUSTER_PORT, CLUSTER_ADDRESS  where the others reach this one (port: else
                         LOCAL_SERVER_PORT + 1; address: else 127.0.0.1, or
                         LOCAL_SERVER_ADDRESS when PEER_ entries are set)
  PEER_<xx>              another broker-server: "host port" of its CLUSTER_PORT
  HANDOVER_TIMEOUT       how long a process taken over from keeps its sessions
                         (24h when not set)
  MAX_SESSIONS (5000), MAX_HANDSHAKES (500; links in handshake that resume
  no session), MAX_HANDSHAKES_PER_ADDRESS (100, the same per source),
  NEW_SESSIONS_PER_MINUTE (6000 per source: IPv4 address, IPv6 /64),
  MAX_FRAME_SIZE (1M), MAX_BUFFERED (2G): limits
  DRAIN_TIMEOUT          on stop, time live sessions get to finish (default
                         10s; 0 ends them at once)
  STATUS_PORT            status page, /status.json, /history.json and /metrics
                         (default 8404; 0 turns it off)
  STATUS_ADDRESS         its address (default 127.0.0.1)
  STATUS_ACCESS_KEY      required when STATUS_ADDRESS is not the loopback
  LOG_FILE               log file (relative to this file's folder; default none)
  LOG_MAX_SIZE, LOG_FILES  rotate at this size (default 10M), keep N (default 5)
  LOG_LEVEL, LOG_FORMAT  debug/info/warning/error (default info); text or json
                         (--log-level and --log-format override them)
REMOTE_SERVER_<xx> values may end with weight=N and max=N (0: no limit), e.g.
  "REMOTE_SERVER_01 = 10.0.0.5 5000 weight=2 max=300".

The configuration is reloaded on SIGHUP and when the file changes: added
servers join, removed ones drain; the log names each key that needs a restart
(LOCAL_SERVER_*, LINK_TLS_*, CLUSTER_*, PEER_*, HANDOVER_TIMEOUT; SERVICE_* a
re-install). A file that removes a key or TLS or raises a limit is applied once
it has read the same for 1 s.
SIGUSR2 (Linux, with CLUSTER_KEY): start the executable now at this path, with
the same arguments; it takes over and this process keeps its sessions until
they end (docs/cluster.md). Without CLUSTER_KEY, SIGUSR2 ends the program.
[GENERAL] CONSOLELOG=1  log to the console (0: warnings and errors only)

Exit codes: 0 ok, 1 runtime failure, 2 bad arguments or configuration.
`;

/** The effective settings, as `--check` prints them. */
export function describeServerConfig(config: ServerConfig): string {
  const t = config.tuning;
  const lines = [
    `Configuration file: ${config.path}`,
    `Listening on:       ${formatHostPort(config.listen)}`,
    `ERP servers (${config.remoteServers.length}):`,
    ...config.remoteServers.map((s) =>
      `  ${s.name.padEnd(20)} ${formatHostPort(s)}${s.weight !== 1 ? ` weight=${s.weight}` : ""}${
        s.maxSessions > 0 ? ` max=${s.maxSessions}` : ""
      }`
    ),
    `Sort method:        ${config.sortMethod}`,
    `Service:            ${config.serviceName} ("${config.serviceDisplayName}")`,
    `Console log:        ${config.consoleLog ? "on" : "off (warnings and errors only)"}`,
    `Resume window:      ${formatDuration(t.resumeTimeoutMs)}`,
    `Heartbeat:          every ${formatDuration(t.heartbeatIntervalMs)}, link dead after ${
      formatDuration(t.linkTimeoutMs)
    } of silence`,
    `Handshake timeout:  ${formatDuration(t.handshakeTimeoutMs)}`,
    `Connect timeout:    ${formatDuration(t.connectTimeoutMs)}`,
    `Drain on stop:      ${config.drainTimeoutMs > 0 ? formatDuration(config.drainTimeoutMs) : "none"}`,
    `Health checks:      ${
      config.health.intervalMs > 0
        ? `every ${formatDuration(config.health.intervalMs)}, rise ${config.health.rise}, fall ${config.health.fall}`
        : "off (a server that fails a connect is tried last)"
    }`,
    `Replay buffer cap:  ${formatSize(t.replayBufferBytes)} per session and direction`,
    `Log:                ${describeLogSettings(config.log)}`,
    `Link:               ${config.tls ? `TLS (${config.tls.certFile})` : "plain TCP"}; admission key ${
      config.admissionKey ? "set (hidden)" : "not set"
    }`,
    `Limits:             ${config.limits.maxSessions} sessions, ${config.limits.maxHandshakes} handshakes (${config.limits.maxHandshakesPerAddress} per address), ${config.limits.newSessionsPerMinute} new sessions/min per address, frames up to ${
      formatSize(config.limits.maxFrameBytes)
    }, ${formatSize(config.limits.maxBufferedBytes)} buffered`,
    `Status page:        ${
      config.status.enabled
        ? `http://${formatHostPort(config.status.listen)}/${config.status.accessKey ? " (access key set, hidden)" : ""}`
        : "off"
    }`,
  ];
  for (const w of config.warnings) lines.push(`Warning: ${w}`);
  return lines.join("\n");
}

/** Runs broker-server with `args`; resolves to the process exit code. */
export async function serverMain(args: string[], options: { signal: AbortSignal }): Promise<number> {
  // SIGHUP means "reload" to this program: it must never end it, even while
  // no reload listener is there (before the watcher starts, and while stopping).
  using _hangup = holdHangup();
  let cli: CliOptions;
  let config: ServerConfig;
  let uninstalling = false;
  try {
    cli = parseCli(args, { driver: false, service: true });
    const answered = answerHelpOrVersion(cli, "broker-server", USAGE);
    if (answered !== null) return answered;
    const path = cli.config ?? defaultConfigPath(SERVER_CONFIG_FILE, currentExecLocation());
    uninstalling = cli.uninstall;
    if (cli.uninstall) return await uninstallService(cli.serviceName ?? await readServiceName(path));
    config = await loadServerConfig(path);
  } catch (err) {
    const hint = uninstalling ? "To remove the service by name: broker-server --uninstall --service-name NAME" : "";
    return usageFailure(err, "broker-server", hint);
  }
  if (cli.check) return await checkOnly(config);
  if (cli.install) return await installService(config, cli.serviceName);
  if (cli.service) {
    if (Deno.build.os !== "windows") {
      console.error(
        "broker-server: --service is for the Windows Service Control Manager; on Linux, systemd runs the program as is",
      );
      return EXIT_USAGE;
    }
    // A service has no console: the Service Control Manager's Stop and shutdown stop it.
    return await runAsWindowsService(
      config.serviceName,
      config.drainTimeoutMs,
      (signal, onRunning) => runBroker(args, config, cli, signal, { onRunning, console: false }),
    );
  }
  return await runBroker(args, config, cli, options.signal, { console: true });
}

/** --check: prints the configuration as understood and whether its files open. */
async function checkOnly(config: ServerConfig): Promise<number> {
  console.log(describeServerConfig(config));
  const problem = await unusableFile(config);
  if (problem) {
    console.error(`broker-server: ${problem}`);
    return EXIT_USAGE;
  }
  console.log("Configuration is valid.");
  return EXIT_OK;
}

/** How runBroker runs: under a console or as a service. */
interface RunOptions {
  /** Called once the broker listens. */
  onRunning?: () => void;
  /** Whether closing the console window, logoff and shutdown stop it (Windows). */
  console: boolean;
}

/** Runs the broker until `signal` aborts (or its console closes); resolves to the exit code. */
async function runBroker(
  args: string[],
  config: ServerConfig,
  cli: CliOptions,
  signal: AbortSignal,
  options: RunOptions,
): Promise<number> {
  const failed = await startLogging(config, cli);
  if (failed !== null) return failed;
  const log = logger("server");
  log.info("broker-server {version} starting with {path}", { version: VERSION, path: config.path });
  await using consoleStop = await watchConsole(options.console, "broker-server");
  for (const w of config.warnings) log.warn("{warning}", { warning: w });
  warnIfFewDescriptors(config);
  const server = new BrokerServer(config, {
    applyLogging: (next) => setupLogging(loggingFrom(next.log, next.consoleLog || cli.console, cli)),
  });
  try {
    await server.start();
  } catch (err) {
    log.error("{error}", { error: (err as Error).message });
    await teardownLogging();
    return EXIT_FAILURE;
  }
  options.onRunning?.();
  if (server.tookOver) await announceMainProcess();
  const watcher = watchConfig(config.path, () => server.reload());
  const upgrade = watchUpgradeSignal(args, config.cluster !== null);
  const handedOver = await Promise.race([
    aborted(AbortSignal.any([signal, consoleStop.signal])).then(() => false),
    server.handedOver.then(() => true),
  ]);
  upgrade[Symbol.dispose]();
  using _stopping = holdHangup(() => log.info("SIGHUP ignored: broker-server is stopping"));
  const stopped = await stopWithinDeadline(server, watcher, consoleStop.signal.aborted, handedOver);
  await teardownLogging();
  consoleStop.finished();
  return stopped ? EXIT_OK : EXIT_FAILURE;
}

/**
 * Checks the files the configuration names and starts logging; the exit
 * code when either fails (said on the console, and in the log file when
 * that file is not the problem: a service has no console), else null.
 */
async function startLogging(config: ServerConfig, cli: CliOptions): Promise<number | null> {
  const settings = loggingFrom(config.log, config.consoleLog || cli.console, cli);
  const problem = await unusableFile(config);
  if (problem) {
    console.error(`broker-server: ${problem}`);
    try {
      await setupLogging(settings);
      logger("server").error("{error}", { error: problem });
      await teardownLogging();
    } catch { /* the console has it */ }
    return EXIT_USAGE;
  }
  try {
    await setupLogging(settings);
    return null;
  } catch (err) {
    console.error(`broker-server: ${(err as Error).message}`);
    return EXIT_FAILURE;
  }
}

/** Warns when the process's open-file limit is below what the configured limits can take. */
function warnIfFewDescriptors(config: ServerConfig): void {
  const fileLimit = openFileLimit();
  const needed = descriptorsNeeded(config.limits);
  if (fileLimit === null || fileLimit >= needed) return;
  logger("server").warn(
    "The open-file limit is {limit}, below the {needed} descriptors that MAX_SESSIONS ({sessions}) and MAX_HANDSHAKES ({handshakes}) can take: {advice}",
    {
      limit: fileLimit,
      needed,
      sessions: config.limits.maxSessions,
      handshakes: config.limits.maxHandshakes,
      advice: SERVER_DESCRIPTOR_ADVICE,
    },
  );
}

/**
 * Stops the server and the config watcher; false (logged) when that did not
 * finish in time. The stop's deadline is ours, not the service manager's
 * (the systemd unit says TimeoutStopSec=infinity): DRAIN_TIMEOUT as in force
 * now, plus time to close what is left. It covers the watcher too: its close
 * waits for a reload under way, which may be settling a file that keeps
 * changing until the server's close stops it.
 */
async function stopWithinDeadline(
  server: BrokerServer,
  watcher: { close(): Promise<void> },
  consoleClosing: boolean,
  handedOver: boolean,
): Promise<boolean> {
  // Windows ends the process about 5 s after a console stop: the drain must leave time for the rest.
  let drainMs = consoleClosing ? Math.min(server.config.drainTimeoutMs, CONSOLE_DRAIN_MS) : undefined;
  let reason: string | undefined;
  if (handedOver) {
    // Taken over: the sessions left are those HANDOVER_TIMEOUT ended (none when they all finished).
    [drainMs, reason] = [0, "HANDOVER_TIMEOUT passed after a new broker-server process took over"];
  }
  const deadlineMs = server.config.drainTimeoutMs + STOP_MARGIN_MS;
  const closing = Promise.all([watcher.close(), server.close(reason, drainMs)]);
  if (!await within(closing, deadlineMs)) {
    logger("server").error(
      "The stop did not finish within {seconds} s (DRAIN_TIMEOUT plus {margin} s): exiting anyway",
      { seconds: deadlineMs / 1000, margin: STOP_MARGIN_MS / 1000 },
    );
    return false;
  }
  await closing;
  return true;
}

/** Opens the files the configuration names, as --check and every start do: what is wrong with one, or null. */
async function unusableFile(config: ServerConfig): Promise<string | null> {
  try {
    await checkServerFiles(config);
    return null;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.message;
  }
}

/** --install: the service named by SERVICE_NAME (or `name`, from --service-name), on this OS. */
async function installService(config: ServerConfig, name?: string): Promise<number> {
  const spec: ServiceSpec = {
    name: name ?? config.serviceName,
    displayName: name ? `${config.serviceDisplayName} (${name})` : config.serviceDisplayName,
    command: selfCommand(Deno.execPath(), Deno.mainModule, isRunFromSource(Deno.execPath())),
    configPath: resolve(config.path),
  };
  return await reportService(
    `Installed the service ${spec.name}`,
    () => Deno.build.os === "windows" ? installWindowsService(spec) : installSystemd(spec, realSystemdHost()),
  );
}

/** --uninstall: the service `name`, on this OS, if broker-server installed it. */
async function uninstallService(name: string): Promise<number> {
  return await reportService(
    `Removed the service ${name}`,
    () => Deno.build.os === "windows" ? uninstallWindowsService(name) : uninstallSystemd(name, realSystemdHost()),
  );
}

async function reportService(title: string, steps: () => Promise<string[]>): Promise<number> {
  try {
    const done = await steps();
    console.log(`${title}:`);
    for (const step of done) console.log(`  ${step}`);
    return EXIT_OK;
  } catch (err) {
    console.error(`broker-server: ${(err as Error).message}`);
    return EXIT_FAILURE;
  }
}

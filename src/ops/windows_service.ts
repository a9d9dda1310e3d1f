/**
 * broker-server as a Windows service.
 *
 * Installing: `sc.exe create` with start type automatic and the config path
 * in the command line (plus a description and restart-on-failure), undone
 * entirely if any step fails. The description and the `--service` command
 * line mark the service as ours: uninstall, and install's "already
 * installed", touch no other service of the same name. Running: when the Service Control Manager
 * starts the program (with `--service`), it must speak the service protocol:
 * StartServiceCtrlDispatcherW runs on a worker thread (FFI `nonblocking`), and
 * ServiceMain and the control handler are thread-safe callbacks into the
 * event loop. Stop and shutdown trigger the graceful stop; SetServiceStatus is
 * never called from inside the control handler itself (that deadlocks), but
 * deferred to the event loop.
 *
 * The pure parts (sc.exe arguments, the status structure, the control state
 * machine) are tested on Linux; the FFI binding runs on Windows only.
 * @module
 */

import type { ServiceSpec } from "./service.ts";
import { VERSION } from "../version.ts";

/** SERVICE_STATUS dwCurrentState values. */
export const ServiceState = { Stopped: 1, StartPending: 2, StopPending: 3, Running: 4 } as const;
/** A state value. */
export type ServiceStateValue = typeof ServiceState[keyof typeof ServiceState];

const SERVICE_WIN32_OWN_PROCESS = 0x10;
const SERVICE_ACCEPT_STOP = 0x1;
const SERVICE_ACCEPT_SHUTDOWN = 0x4;
const SERVICE_CONTROL_STOP = 1;
const SERVICE_CONTROL_INTERROGATE = 4;
const SERVICE_CONTROL_SHUTDOWN = 5;
const NO_ERROR = 0;
const ERROR_CALL_NOT_IMPLEMENTED = 120;

/** Quotes one argument for a Windows command line (CommandLineToArgvW rules). */
export function windowsQuote(arg: string): string {
  if (arg !== "" && !/[\s"]/.test(arg)) return arg;
  return `"${arg.replace(/(\\*)"/g, '$1$1\\"').replace(/(\\+)$/, "$1$1")}"`;
}

/** The binPath the service runs: the program, its config, and --service. */
export function serviceCommandLine(spec: ServiceSpec): string {
  return [...spec.command, "--config", spec.configPath, "--service"].map(windowsQuote).join(" ");
}

/** The sc.exe invocations that install the service, in order. */
export function scInstallSteps(spec: ServiceSpec): string[][] {
  return [
    ["create", spec.name, "binPath=", serviceCommandLine(spec), "start=", "auto", "DisplayName=", spec.displayName],
    ["description", spec.name, `${spec.displayName}: ${DESCRIPTION_MARK} (installed by broker-server ${VERSION})`],
    ["failure", spec.name, "reset=", "86400", "actions=", "restart/5000/restart/5000/restart/30000"],
  ];
}

/** The SERVICE_STATUS structure (7 DWORDs). */
export function serviceStatus(
  state: ServiceStateValue,
  options: { checkPoint?: number; waitHintMs?: number; exitCode?: number } = {},
): Uint32Array {
  const accepts = state === ServiceState.Running ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN : 0;
  return new Uint32Array([
    SERVICE_WIN32_OWN_PROCESS,
    state,
    accepts,
    options.exitCode ?? 0,
    0,
    options.checkPoint ?? 0,
    options.waitHintMs ?? 0,
  ]);
}

/**
 * The control logic, without FFI: what to answer the SCM and which status
 * to report, through the injected `report` (which the FFI layer defers to
 * the event loop) and `stop` (which starts the graceful stop).
 */
export class ServiceController {
  #report: (status: Uint32Array) => void;
  #stop: () => void;
  #stopTimeoutMs: number;
  #state: ServiceStateValue = ServiceState.StartPending;
  #checkPoint = 0;

  /** Creates the controller; `report` sends a status to the SCM. */
  constructor(report: (status: Uint32Array) => void, stop: () => void, stopTimeoutMs: number) {
    this.#report = report;
    this.#stop = stop;
    this.#stopTimeoutMs = stopTimeoutMs;
  }

  /** The state last reported. */
  get state(): ServiceStateValue {
    return this.#state;
  }

  /** ServiceMain began: starting. */
  starting(): void {
    this.#set(ServiceState.StartPending, 10_000);
  }

  /** The broker listens: running. */
  running(): void {
    this.#set(ServiceState.Running, 0);
  }

  /** The graceful stop finished: stopped (with an exit code, 0 for a clean stop). */
  stopped(exitCode = 0): void {
    this.#set(ServiceState.Stopped, 0, exitCode);
  }

  /** A control from the SCM; returns the handler's answer code. */
  control(code: number): number {
    if (code === SERVICE_CONTROL_STOP || code === SERVICE_CONTROL_SHUTDOWN) {
      if (this.#state === ServiceState.Running || this.#state === ServiceState.StartPending) {
        this.#set(ServiceState.StopPending, this.#stopTimeoutMs + 10_000);
        this.#stop();
      }
      return NO_ERROR;
    }
    if (code === SERVICE_CONTROL_INTERROGATE) return NO_ERROR;
    return ERROR_CALL_NOT_IMPLEMENTED;
  }

  #set(state: ServiceStateValue, waitHintMs: number, exitCode = 0): void {
    this.#state = state;
    const pending = state === ServiceState.StartPending || state === ServiceState.StopPending;
    this.#checkPoint = pending ? this.#checkPoint + 1 : 0;
    this.#report(serviceStatus(state, { checkPoint: this.#checkPoint, waitHintMs, exitCode }));
  }
}

/** Runs a Windows command-line tool (sc.exe, reg.exe) with arguments; injectable for tests. */
export type ToolRunner = (args: string[]) => Promise<{ code: number; output: string }>;

function realTool(program: string): ToolRunner {
  return async (args) => {
    const out = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return { code: out.code, output: text.trim() };
  };
}

/** Runs the real sc.exe. */
export const realSc: ToolRunner = realTool("sc.exe");

/** The tools the install steps use; each defaults to the real program. */
export interface WindowsServiceOptions {
  /** Runs sc.exe. */
  sc?: ToolRunner;
  /** Runs reg.exe (to read a service's configuration: Wine's sc.exe has no `qc`). */
  reg?: ToolRunner;
}

/** ERROR_ACCESS_DENIED: not an elevated prompt. */
const ACCESS_DENIED = 5;
/** ERROR_SERVICE_EXISTS. */
const SERVICE_EXISTS = 1073;
/** ERROR_DUPLICATE_SERVICE_NAME: the display name is another service's name or display name. */
const DUPLICATE_SERVICE_NAME = 1078;

/**
 * Words in the description of every service broker-server installs; with a
 * command line ending in `--service`, how uninstall knows the service is ours.
 */
const DESCRIPTION_MARK = "resilient broker for TOTVS Protheus Smart Client connections";

/** A service as the Service Control Manager keeps it (its registry key). */
interface InstalledService {
  /** The command line it runs (ImagePath, sc.exe's binPath). */
  imagePath: string;
  /** Its description ("" when it has none). */
  description: string;
}

/** True for a service broker-server installed: our description and our `--service` command line. */
function isBrokerService(service: InstalledService): boolean {
  return service.description.includes(DESCRIPTION_MARK) && /(^|\s)--service$/.test(service.imagePath.trim());
}

/**
 * Reads the service `name` from the registry key the Service Control Manager
 * keeps it in (reg.exe prints value lines the same way in every Windows
 * language, and Wine has reg.exe but not `sc.exe qc`); null when there is no
 * such service.
 */
async function queryWindowsService(
  name: string,
  reg: ToolRunner = realTool("reg.exe"),
): Promise<InstalledService | null> {
  if (name === "" || /[\\/]/.test(name)) {
    throw new RangeError(`Cannot use SERVICE_NAME "${name}" as a Windows service name: it cannot hold "/" or "\\"`);
  }
  const result = await reg(["query", `HKLM\\SYSTEM\\CurrentControlSet\\Services\\${name}`]);
  if (result.code !== 0) return null;
  const value = (key: string) => {
    const line = result.output.split(/\r?\n/).find((l) => new RegExp(`^\\s+${key}\\s+REG_`, "i").test(l));
    return line?.replace(new RegExp(`^\\s+${key}\\s+REG_\\w+`, "i"), "").trim() ?? null;
  };
  const imagePath = value("ImagePath");
  return imagePath === null ? null : { imagePath, description: value("Description") ?? "" };
}

function scFailure(step: string[], result: { code: number; output: string }): Error {
  if (result.code === ACCESS_DENIED || /access is denied/i.test(result.output)) {
    return new Error(
      `Installing or removing a Windows service needs an elevated prompt: open the command prompt with "Run as administrator" and try again`,
    );
  }
  return new Error(`sc.exe ${step[0]} failed (exit ${result.code}): ${result.output}`);
}

/** Installs the service; if any step fails, deletes what was created. */
export async function installWindowsService(spec: ServiceSpec, options: WindowsServiceOptions = {}): Promise<string[]> {
  const sc = options.sc ?? realSc;
  const done: string[] = [];
  for (const step of scInstallSteps(spec)) {
    const result = await sc(step);
    if (result.code !== 0) {
      if (step[0] !== "create") await sc(["delete", spec.name]);
      if (result.code === SERVICE_EXISTS) {
        const existing = await queryWindowsService(spec.name, options.reg);
        if (existing && isBrokerService(existing)) {
          throw new Error(
            `The service ${spec.name} is already installed (it runs ${existing.imagePath}): run --uninstall first`,
          );
        }
        throw new Error(
          `The service name ${spec.name} is taken by another service (${
            existing ? `it runs ${existing.imagePath}` : "its configuration cannot be read"
          }): choose another SERVICE_NAME`,
        );
      }
      if (result.code === DUPLICATE_SERVICE_NAME) {
        throw new Error(
          `The display name "${spec.displayName}" is used by another service: choose another SERVICE_DISPLAY_NAME`,
        );
      }
      throw scFailure(step, result);
    }
    done.push(`sc.exe ${step[0]} ${spec.name}`);
  }
  done.push(`start it with: sc.exe start ${spec.name} (or from services.msc)`);
  return done;
}

/** Stops (if running) and deletes the service, if broker-server installed it; refuses any other. */
export async function uninstallWindowsService(name: string, options: WindowsServiceOptions = {}): Promise<string[]> {
  const sc = options.sc ?? realSc;
  const existing = await queryWindowsService(name, options.reg);
  if (!existing) throw new Error(`The service ${name} is not installed`);
  if (!isBrokerService(existing)) {
    throw new Error(
      `Refusing to remove the service ${name}: broker-server did not install it (it runs ${existing.imagePath}); it was left as it is`,
    );
  }
  const stop = await sc(["stop", name]);
  if (stop.code === ACCESS_DENIED) throw scFailure(["stop"], stop);
  if (stop.code === 1060) throw new Error(`The service ${name} is not installed`);
  const del = await sc(["delete", name]);
  if (del.code !== 0) throw scFailure(["delete"], del);
  return [...(stop.code === 0 ? [`sc.exe stop ${name}`] : []), `sc.exe delete ${name}`];
}

function wide(text: string): Uint16Array {
  const out = new Uint16Array(text.length + 1);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/**
 * Runs `main` as the service `name` under the Service Control Manager
 * (Windows only). `main` gets an AbortSignal that Stop/shutdown aborts and
 * an `onRunning` to call once the broker listens; it resolves with the exit
 * code when the graceful stop is complete.
 */
export async function runAsWindowsService(
  name: string,
  stopTimeoutMs: number,
  main: (signal: AbortSignal, onRunning: () => void) => Promise<number>,
): Promise<number> {
  const lib = Deno.dlopen("advapi32.dll", {
    StartServiceCtrlDispatcherW: { parameters: ["buffer"], result: "i32", nonblocking: true },
    RegisterServiceCtrlHandlerExW: { parameters: ["buffer", "function", "pointer"], result: "pointer" },
    SetServiceStatus: { parameters: ["pointer", "buffer"], result: "i32" },
  });
  const serviceName = wide(name);
  const stop = new AbortController();
  let handle: Deno.PointerValue = null;
  let exitCode = 0;
  let finished: Promise<void> = Promise.resolve();
  // Keep every status buffer alive until the SCM has read it.
  const report = (status: Uint32Array) => {
    setTimeout(() => {
      if (handle) lib.symbols.SetServiceStatus(handle, status);
    }, 0);
  };
  const controller = new ServiceController(report, () => stop.abort(), stopTimeoutMs);
  const handler = Deno.UnsafeCallback.threadSafe(
    { parameters: ["u32", "u32", "pointer", "pointer"], result: "u32" } as const,
    (code: number) => controller.control(code),
  );
  const serviceMain = Deno.UnsafeCallback.threadSafe(
    { parameters: ["u32", "pointer"], result: "void" } as const,
    () => {
      handle = lib.symbols.RegisterServiceCtrlHandlerExW(serviceName, handler.pointer, null);
      controller.starting();
      finished = main(stop.signal, () => controller.running()).then((code) => {
        exitCode = code;
      }, () => {
        exitCode = 1;
      }).then(() => controller.stopped(exitCode));
    },
  );
  const table = new Uint8Array(32);
  const view = new DataView(table.buffer);
  view.setBigUint64(0, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(serviceName))), true);
  view.setBigUint64(8, BigInt(Deno.UnsafePointer.value(serviceMain.pointer)), true);
  const ok = await lib.symbols.StartServiceCtrlDispatcherW(table);
  await finished;
  handler.close();
  serviceMain.close();
  lib.close();
  if (!ok) {
    throw new Error(
      `Cannot talk to the Service Control Manager: --service is for the SCM to use; run broker-server without it from a console`,
    );
  }
  return exitCode;
}

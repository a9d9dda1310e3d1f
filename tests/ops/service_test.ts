import { deepEqual, equal, match, rejects } from "node:assert/strict";
import { selfCommand, type ServiceSpec } from "../../src/ops/service.ts";
import { V8_FLAGS_ARG } from "../../src/runtime_flags.ts";
import {
  installSystemd,
  type SystemdHost,
  systemdQuote,
  systemdUnit,
  uninstallSystemd,
} from "../../src/ops/systemd.ts";
import {
  installWindowsService,
  scInstallSteps,
  type ScRunner,
  ServiceController,
  ServiceState,
  serviceStatus,
  uninstallWindowsService,
  windowsQuote,
} from "../../src/ops/windows_service.ts";

const spec: ServiceSpec = {
  name: "XXX_TOTVS_BALANCE_SC_001",
  displayName: "BROKER SERVICE",
  command: ["/opt/broker/broker-server"],
  configPath: "/opt/broker/my config/appserver.ini",
  stopTimeoutMs: 10_000,
};

Deno.test("the systemd unit names the service, runs the program with its config and restarts on failure", () => {
  equal(
    systemdUnit(spec),
    `# Installed by broker-server --install; remove with broker-server --uninstall.
[Unit]
Description=BROKER SERVICE
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/opt/broker/broker-server --config "/opt/broker/my config/appserver.ini"
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
# Stop: SIGTERM, then the drain period (DRAIN_TIMEOUT) for live sessions.
KillSignal=SIGTERM
TimeoutStopSec=20
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`,
  );
  equal(systemdQuote("100%"), "100%%");
  equal(systemdQuote('a "b" $x'), '"a \\"b\\" $$x"');
});

function fakeHost(root: string, overrides: Partial<SystemdHost> = {}): SystemdHost & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    root,
    isRoot: true,
    systemdRunning: true,
    systemctl(args) {
      calls.push(args);
      return Promise.resolve({ code: 0, stderr: "" });
    },
    calls,
    ...overrides,
  };
}

Deno.test("install writes the unit into the root, reloads and enables it; uninstall undoes it", async () => {
  const root = await Deno.makeTempDir();
  const host = fakeHost(root);
  const steps = await installSystemd(spec, host);
  const unit = await Deno.readTextFile(`${root}/etc/systemd/system/XXX_TOTVS_BALANCE_SC_001.service`);
  equal(unit, systemdUnit(spec));
  deepEqual(host.calls, [["daemon-reload"], ["enable", "XXX_TOTVS_BALANCE_SC_001"]]);
  match(steps.at(-1) ?? "", /systemctl start XXX_TOTVS_BALANCE_SC_001/);
  await rejects(installSystemd(spec, host), /already installed .*run --uninstall first/);

  host.calls.length = 0;
  await uninstallSystemd(spec.name, host);
  deepEqual(host.calls, [["disable", "--now", "XXX_TOTVS_BALANCE_SC_001"], ["daemon-reload"]]);
  deepEqual([...Deno.readDirSync(`${root}/etc/systemd/system`)], []);
  await rejects(uninstallSystemd(spec.name, host), /is not installed/);
  await Deno.remove(root, { recursive: true });
});

Deno.test("install refuses without root and leaves nothing behind when systemctl fails", async () => {
  const root = await Deno.makeTempDir();
  await rejects(installSystemd(spec, fakeHost(root, { isRoot: false })), /needs root: run it again with sudo/);
  const failing = fakeHost(root);
  failing.systemctl = (args) => {
    failing.calls.push(args);
    return Promise.resolve(
      args[0] === "enable" ? { code: 1, stderr: "Failed to enable unit" } : { code: 0, stderr: "" },
    );
  };
  await rejects(
    installSystemd(spec, failing),
    /systemctl enable XXX_TOTVS_BALANCE_SC_001 failed \(Failed to enable unit\); the unit was removed again/,
  );
  deepEqual([...Deno.readDirSync(`${root}/etc/systemd/system`)], [], "no half-installed unit");
  deepEqual(failing.calls, [["daemon-reload"], ["enable", "XXX_TOTVS_BALANCE_SC_001"], ["daemon-reload"]]);
  await Deno.remove(root, { recursive: true });
});

Deno.test("the service runs the compiled program, or deno run with the V8 flags and the entry file", () => {
  deepEqual(selfCommand("/opt/broker/broker-server", "file:///snapshot/server.ts", false), [
    "/opt/broker/broker-server",
  ]);
  const fromSource = selfCommand("/usr/bin/deno", "file:///work/main/server.ts", true);
  equal(fromSource[0], "/usr/bin/deno");
  deepEqual(fromSource.slice(1, 3), ["run", V8_FLAGS_ARG]);
  equal(fromSource.at(-1), "/work/main/server.ts");
  equal(selfCommand("C:\\deno\\deno.exe", "file:///C:/broker/server.ts", true).at(-1), "C:\\broker\\server.ts");
});

Deno.test("Windows: sc.exe steps with automatic start and the config path in the command line", () => {
  const win: ServiceSpec = {
    ...spec,
    command: ["C:\\TOTVS\\broker\\broker-server.exe"],
    configPath: "C:\\TOTVS\\broker\\appserver.ini",
  };
  deepEqual(scInstallSteps(win)[0], [
    "create",
    "XXX_TOTVS_BALANCE_SC_001",
    "binPath=",
    "C:\\TOTVS\\broker\\broker-server.exe --config C:\\TOTVS\\broker\\appserver.ini --service",
    "start=",
    "auto",
    "DisplayName=",
    "BROKER SERVICE",
  ]);
  equal(windowsQuote("C:\\Program Files\\broker\\"), '"C:\\Program Files\\broker\\\\"');
  equal(windowsQuote('say "hi"'), '"say \\"hi\\""');
});

Deno.test("Windows: install undoes itself on failure and explains missing rights", async () => {
  const calls: string[][] = [];
  const sc = (answers: Record<string, number>): ScRunner => (args) => {
    calls.push(args);
    return Promise.resolve({
      code: answers[args[0] as string] ?? 0,
      output: answers[args[0] as string] ? "[SC] failed" : "",
    });
  };
  await installWindowsService(spec, sc({}));
  deepEqual(calls.map((c) => c[0]), ["create", "description", "failure"]);
  calls.length = 0;
  await rejects(installWindowsService(spec, sc({ failure: 87 })), /sc\.exe failure failed \(exit 87\)/);
  deepEqual(calls.map((c) => c[0]), ["create", "description", "failure", "delete"], "no half-installed service");
  await rejects(
    installWindowsService(spec, sc({ create: 5 })),
    /needs an elevated prompt: open the command prompt with "Run as administrator"/,
  );
  await rejects(installWindowsService(spec, sc({ create: 1073 })), /already installed/);
  await rejects(uninstallWindowsService("X", sc({ stop: 1060 })), /The service X is not installed/);
  calls.length = 0;
  deepEqual(
    await uninstallWindowsService("X", sc({ stop: 1062 })),
    ["sc.exe delete X"],
    "a stopped service is just deleted",
  );
});

Deno.test("Windows: the control state machine reports start, running, stop pending and stopped", () => {
  const reports: number[][] = [];
  let stops = 0;
  const c = new ServiceController((s) => reports.push([...s]), () => stops++, 10_000);
  c.starting();
  c.running();
  equal(c.control(4), 0, "interrogate");
  equal(c.control(128), 120, "unknown controls are not implemented");
  equal(c.control(1), 0, "stop");
  equal(c.control(5), 0, "shutdown after stop does not stop twice");
  c.stopped();
  equal(stops, 1);
  equal(c.state, ServiceState.Stopped);
  // [type, state, accepted, exit code, specific, checkpoint, wait hint]
  deepEqual(reports, [
    [0x10, 2, 0, 0, 0, 1, 10_000],
    [0x10, 4, 5, 0, 0, 0, 0],
    [0x10, 3, 0, 0, 0, 1, 20_000],
    [0x10, 1, 0, 0, 0, 0, 0],
  ]);
  deepEqual([...serviceStatus(ServiceState.Stopped, { exitCode: 1 })], [0x10, 1, 0, 1, 0, 0, 0]);
});

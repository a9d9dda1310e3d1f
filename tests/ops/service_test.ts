import { deepEqual, equal, match, ok, rejects, throws } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { readServiceName, selfCommand, type ServiceSpec } from "../../src/ops/service.ts";
import { runtimeFlags } from "../../src/runtime_flags.ts";
import { VERSION } from "../../src/version.ts";
import { parseCli } from "../../src/cli.ts";
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
  ServiceController,
  ServiceState,
  serviceStatus,
  type ToolRunner,
  uninstallWindowsService,
  windowsQuote,
} from "../../src/ops/windows_service.ts";

const spec: ServiceSpec = {
  name: "XXX_TOTVS_BALANCE_SC_001",
  displayName: "BROKER SERVICE",
  command: ["/opt/broker/broker-server"],
  configPath: "/opt/broker/my config/appserver.ini",
};

Deno.test("the systemd unit names the service, runs the program with its config and restarts on failure", () => {
  equal(
    systemdUnit(spec),
    `# Installed by broker-server ${VERSION}; remove it with broker-server --uninstall.
[Unit]
Description=BROKER SERVICE
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/opt/broker/broker-server --config "/opt/broker/my config/appserver.ini"
ExecReload=/bin/kill -HUP $MAINPID
# Upgrades that keep sessions (CLUSTER_KEY, docs/cluster.md): install the new
# version as a second unit (broker-server --install --service-name NAME) and
# start it; this one exits by itself once its sessions end. Or in place:
# replace the executable, then systemctl kill --signal=SIGUSR2
# --kill-whom=main on this unit; the new process takes over and runs
# systemd-notify --pid to become the main process, which systemd accepts
# only from a process of the unit with NotifyAccess=all.
NotifyAccess=all
Restart=on-failure
RestartSec=2
# Stop: SIGTERM; broker-server drains live sessions for DRAIN_TIMEOUT (the
# value in force at the stop) and exits by itself within DRAIN_TIMEOUT + 10 s.
KillSignal=SIGTERM
TimeoutStopSec=infinity
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`,
  );
  equal(systemdQuote("100%"), "100%%");
  equal(systemdQuote('a "b" $x'), '"a \\"b\\" $$x"');
});

/**
 * Reads a unit file by systemd's rules (systemd.syntax(7)): comments, a line
 * that ends in an odd number of backslashes continues on the next one, and
 * `%` starts a specifier (`%%` is a plain %). Returns [section, key, value]
 * for each directive; throws on a specifier, which broker-server never means.
 */
function readUnit(text: string): [string, string, string][] {
  const out: [string, string, string][] = [];
  let section = "";
  let pending = "";
  for (const raw of text.split("\n")) {
    if (pending === "" && /^\s*[#;]/.test(raw)) continue;
    const line = pending + raw;
    const trailing = /\\*$/.exec(line)?.[0].length ?? 0;
    if (trailing % 2 === 1) {
      pending = line.slice(0, -1) + " ";
      continue;
    }
    pending = "";
    const trimmed = line.trim();
    if (trimmed === "") continue;
    if (trimmed.startsWith("[")) {
      section = trimmed;
      continue;
    }
    const eq = trimmed.indexOf("=");
    const value = trimmed.slice(eq + 1).trim().replace(/%(.)/g, (_, c: string) => {
      if (c !== "%") throw new SyntaxError(`Specifier %${c} in ${JSON.stringify(trimmed)}`);
      return "%";
    });
    out.push([section, trimmed.slice(0, eq).trim(), value]);
  }
  return out;
}

const UNIT_KEYS = [
  "[Unit] Description",
  "[Unit] After",
  "[Unit] Wants",
  "[Service] Type",
  "[Service] ExecStart",
  "[Service] ExecReload",
  "[Service] NotifyAccess",
  "[Service] Restart",
  "[Service] RestartSec",
  "[Service] KillSignal",
  "[Service] TimeoutStopSec",
  "[Service] LimitNOFILE",
  "[Install] WantedBy",
];

Deno.test("SERVICE_DISPLAY_NAME never breaks the unit: % is escaped, a final backslash or a control character is refused", () => {
  for (const displayName of ["100% up", "BROKER %n %i %%", 'say "hi" \\ there', "C:\\TOTVS\\ broker"]) {
    const directives = readUnit(systemdUnit({ ...spec, displayName }));
    deepEqual(directives.map(([section, key]) => `${section} ${key}`), UNIT_KEYS, displayName);
    equal(directives[0]?.[2], displayName, "Description= reads back as written");
  }
  throws(
    () => systemdUnit({ ...spec, displayName: "BROKER SERVICE\\" }),
    (err: Error) =>
      err instanceof RangeError &&
      /SERVICE_DISPLAY_NAME .*final backslash would join the next line to Description=, got "BROKER SERVICE\\"/.test(
        err.message,
      ),
  );
  throws(() => systemdUnit({ ...spec, displayName: "two\nlines" }), RangeError);
  throws(() => systemdUnit({ ...spec, displayName: "bell\x07" }), RangeError);
  throws(() => systemdUnit({ ...spec, name: "../../etc/passwd" }), RangeError, "SERVICE_NAME becomes a file name");
  // ExecStart words: control characters are C escapes inside quotes, never a line break.
  const exec = readUnit(systemdUnit({ ...spec, configPath: "/opt/a\nb/100%/$HOME\\x.ini" }))
    .find(([, key]) => key === "ExecStart")?.[2];
  equal(exec, '/opt/broker/broker-server --config "/opt/a\\x0ab/100%/$$HOME\\\\x.ini"');
});

const systemdAnalyze = (() => {
  try {
    return new Deno.Command("systemd-analyze", { args: ["--version"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
})();
if (!systemdAnalyze) console.log("Skipping systemd-analyze verify of the unit: systemd-analyze is not installed here");

Deno.test({
  name: "systemd-analyze verify accepts the unit without a warning, with awkward names and paths",
  ignore: !systemdAnalyze,
  async fn() {
    const dir = await Deno.makeTempDir();
    const unit = systemdUnit({
      name: "broker-test",
      displayName: '100% BROKER "SERVICE" C:\\x',
      command: [Deno.execPath()],
      configPath: `${dir}/my config/100% $HOME.ini`,
    });
    await Deno.writeTextFile(`${dir}/broker-test.service`, unit);
    const out = await new Deno.Command("systemd-analyze", {
      args: ["verify", `${dir}/broker-test.service`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    equal(out.code, 0, said);
    equal(said.trim(), "", "no warning");
    await Deno.remove(dir, { recursive: true });
  },
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
  deepEqual(host.calls, [["daemon-reload"], ["enable", "XXX_TOTVS_BALANCE_SC_001.service"]]);
  match(steps.at(-1) ?? "", /systemctl start XXX_TOTVS_BALANCE_SC_001\.service/);
  await rejects(installSystemd(spec, host), /already installed .*run --uninstall first/);

  host.calls.length = 0;
  await uninstallSystemd(spec.name, host);
  deepEqual(host.calls, [["disable", "--now", "XXX_TOTVS_BALANCE_SC_001.service"], ["daemon-reload"]]);
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
    /systemctl enable XXX_TOTVS_BALANCE_SC_001\.service failed \(Failed to enable unit\); the unit was removed again/,
  );
  deepEqual([...Deno.readDirSync(`${root}/etc/systemd/system`)], [], "no half-installed unit");
  deepEqual(failing.calls, [["daemon-reload"], ["enable", "XXX_TOTVS_BALANCE_SC_001.service"], ["daemon-reload"]]);
  await Deno.remove(root, { recursive: true });
});

const totvsUnit = `[Unit]
Description=TOTVS Appserver broker
[Service]
ExecStart=/totvs/bin/appserver/appsrvlinux -balance_smart_client_desktop
[Install]
WantedBy=multi-user.target
`;

Deno.test("uninstall refuses a unit broker-server did not write, and says what it runs", async () => {
  const root = await Deno.makeTempDir();
  const folder = `${root}/etc/systemd/system`;
  await Deno.mkdir(folder, { recursive: true });
  const path = `${folder}/XXX_TOTVS_BALANCE_SC_001.service`;
  await Deno.writeTextFile(path, totvsUnit);
  const host = fakeHost(root);
  await rejects(
    uninstallSystemd(spec.name, host),
    /Refusing to remove the service XXX_TOTVS_BALANCE_SC_001: broker-server did not install it \(.*XXX_TOTVS_BALANCE_SC_001\.service: ExecStart=\/totvs\/bin\/appserver\/appsrvlinux -balance_smart_client_desktop\)/,
  );
  equal(await Deno.readTextFile(path), totvsUnit, "the unit is untouched");
  deepEqual(host.calls, [], "nothing was stopped or disabled");
  await rejects(
    installSystemd(spec, host),
    /The service name XXX_TOTVS_BALANCE_SC_001 is taken by another service \(.*: ExecStart=\/totvs\/bin\/appserver\/appsrvlinux .*\): choose another SERVICE_NAME/,
  );
  equal(await Deno.readTextFile(path), totvsUnit, "install did not overwrite it");

  // A link (e.g. a masked unit) is not ours either (Windows, where this code never runs, needs rights for links).
  if (Deno.build.os !== "windows") {
    await Deno.remove(path);
    await Deno.symlink("/dev/null", path);
    await rejects(uninstallSystemd(spec.name, host), /did not install it \(.*: a link to \/dev\/null\)/);
    ok((await Deno.lstat(path)).isSymlink);
    deepEqual(host.calls, []);
  }
  await Deno.remove(root, { recursive: true });
});

Deno.test("install refuses a name that a packaged unit or an init script already has", async () => {
  const root = await Deno.makeTempDir();
  const host = fakeHost(root);
  await Deno.mkdir(`${root}/usr/lib/systemd/system`, { recursive: true });
  await Deno.writeTextFile(`${root}/usr/lib/systemd/system/XXX_TOTVS_BALANCE_SC_001.service`, totvsUnit);
  await rejects(
    installSystemd(spec, host),
    /is taken by another service \(.*usr[\\/]lib[\\/]systemd[\\/]system[\\/].*appsrvlinux/,
  );
  await rejects(uninstallSystemd(spec.name, host), /Refusing to remove the service XXX_TOTVS_BALANCE_SC_001/);
  await Deno.remove(`${root}/usr/lib/systemd/system/XXX_TOTVS_BALANCE_SC_001.service`);
  await Deno.mkdir(`${root}/etc/init.d`, { recursive: true });
  await Deno.writeTextFile(`${root}/etc/init.d/XXX_TOTVS_BALANCE_SC_001`, "#!/bin/sh\n/totvs/appsrvlinux\n");
  await rejects(
    installSystemd(spec, host),
    /is taken by another service \(.*init\.d[\\/]XXX_TOTVS_BALANCE_SC_001: a SysV init script\)/,
  );
  deepEqual(host.calls, []);
  equal(
    [...Deno.readDirSync(root)].map((e) => e.name).sort().join(","),
    "etc,usr",
    "nothing written beside what the test made",
  );
  await Deno.remove(root, { recursive: true });
});

Deno.test("uninstall removes a unit an earlier version wrote", async () => {
  const root = await Deno.makeTempDir();
  await Deno.mkdir(`${root}/etc/systemd/system`, { recursive: true });
  const path = `${root}/etc/systemd/system/OLD_BROKER.service`;
  const earlier = systemdUnit({ ...spec, name: "OLD_BROKER" }).replace(
    /^.*\n/,
    "# Installed by broker-server --install; remove with broker-server --uninstall.\n",
  );
  await Deno.writeTextFile(path, earlier);
  const host = fakeHost(root);
  await uninstallSystemd("OLD_BROKER", host);
  deepEqual(host.calls, [["disable", "--now", "OLD_BROKER.service"], ["daemon-reload"]]);
  deepEqual([...Deno.readDirSync(`${root}/etc/systemd/system`)], []);
  await rejects(uninstallSystemd("../../x", host), RangeError);
  await Deno.remove(root, { recursive: true });
});

Deno.test("--uninstall reads only SERVICE_NAME: an invalid file still names the service; --service-name without a file", async () => {
  const dir = await Deno.makeTempDir();
  const name = `BROKER_TEST_${crypto.randomUUID().slice(0, 8)}`;
  const path = `${dir}/appserver.ini`;
  await Deno.writeTextFile(
    path,
    `[balance_smart_client_desktop]\nREMOTE_SERVER_01 = nonsense\nservice_name = ${name}\nSERVICE_NAME = SECOND\n`,
  );
  equal(await readServiceName(path), name);
  await Deno.writeTextFile(`${dir}/other.ini`, "[GENERAL]\nCONSOLELOG=1\n");
  equal(await readServiceName(`${dir}/other.ini`), "PROTHEUS_BROKER_SERVER");
  equal(parseCli(["--uninstall", "--service-name", "X"], { driver: false, service: true }).serviceName, "X");
  equal(parseCli(["--install", "--service-name", "X_B"], { driver: false, service: true }).serviceName, "X_B");
  throws(
    () => parseCli(["--check", "--service-name", "X"], { driver: false, service: true }),
    /with --install or --uninstall only/,
  );
  throws(() => parseCli(["--install", "--service-name", "A B"], { driver: false, service: true }), /without spaces/);

  // The real program: past the invalid file (exit 2 would mean it stopped there) to the service, which does not
  // exist (a random name), so nothing on this machine is touched.
  const entry = fileURLToPath(new URL("../../server.ts", import.meta.url));
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", entry, ...args], stdin: "null" })
      .output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  };
  const removed = await run("--uninstall", "--config", path);
  equal(removed.code, 1, removed.stderr);
  match(removed.stderr, new RegExp(`broker-server: The service ${name} is not installed`));
  const missing = await run("--uninstall", "--config", `${dir}/none.ini`);
  equal(missing.code, 2, missing.stderr);
  match(missing.stderr, /Cannot read configuration file .*none\.ini.*\n.*--uninstall --service-name NAME/);
  const byName = await run("--uninstall", "--service-name", name, "--config", `${dir}/none.ini`);
  equal(byName.code, 1, byName.stderr);
  match(byName.stderr, new RegExp(`The service ${name} is not installed`));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the service runs the compiled program, or deno run with its V8 flags, permissions and entry file", () => {
  deepEqual(selfCommand("/opt/broker/broker-server", "file:///snapshot/server.ts", false), [
    "/opt/broker/broker-server",
  ]);
  const fromSource = selfCommand("/usr/bin/deno", "file:///work/main/server.ts", true);
  equal(fromSource[0], "/usr/bin/deno");
  deepEqual(fromSource.slice(1, -1), ["run", ...runtimeFlags("server")]);
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

/** A fake reg.exe that knows the services in `services` (name -> ImagePath and Description), as reg query prints them. */
function fakeReg(services: Record<string, { imagePath: string; description?: string }>): ToolRunner {
  return (args) => {
    const name = (args[1] ?? "").split("\\").at(-1) ?? "";
    const service = services[name];
    if (args[0] !== "query" || !service) {
      return Promise.resolve({
        code: 1,
        output: "ERROR: The system was unable to find the specified registry key or value.",
      });
    }
    const lines = [
      "",
      `HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\${name}`,
      "    Type    REG_DWORD    0x10",
      "    Start    REG_DWORD    0x2",
      `    ImagePath    REG_EXPAND_SZ    ${service.imagePath}`,
      ...(service.description !== undefined ? [`    Description    REG_SZ    ${service.description}`] : []),
      "    ObjectName    REG_SZ    LocalSystem",
      "",
    ];
    return Promise.resolve({ code: 0, output: lines.join("\r\n").trim() });
  };
}

/** What our installer registers for `spec`, as the registry then holds it. */
function ourService(win: ServiceSpec): { imagePath: string; description: string } {
  const steps = scInstallSteps(win);
  return { imagePath: steps[0]?.[3] ?? "", description: steps[1]?.[2] ?? "" };
}

/** The TOTVS appserver service that the TOTVS example's SERVICE_NAME names. */
const totvsService = {
  imagePath: '"C:\\TOTVS\\bin\\appserver\\appserver.exe" -balance_smart_client_desktop',
  description: "",
};

Deno.test("Windows: install undoes itself on failure and explains missing rights", async () => {
  const calls: string[][] = [];
  const sc = (answers: Record<string, number>): ToolRunner => (args) => {
    calls.push(args);
    return Promise.resolve({
      code: answers[args[0] as string] ?? 0,
      output: answers[args[0] as string] ? "[SC] failed" : "",
    });
  };
  const reg = fakeReg({ X: ourService({ ...spec, name: "X" }), [spec.name]: ourService(spec) });
  await installWindowsService(spec, { sc: sc({}), reg });
  deepEqual(calls.map((c) => c[0]), ["create", "description", "failure"]);
  calls.length = 0;
  await rejects(installWindowsService(spec, { sc: sc({ failure: 87 }), reg }), /sc\.exe failure failed \(exit 87\)/);
  deepEqual(calls.map((c) => c[0]), ["create", "description", "failure", "delete"], "no half-installed service");
  await rejects(
    installWindowsService(spec, { sc: sc({ create: 5 }), reg }),
    /needs an elevated prompt: open the command prompt with "Run as administrator"/,
  );
  await rejects(
    installWindowsService(spec, { sc: sc({ create: 1073 }), reg }),
    /The service XXX_TOTVS_BALANCE_SC_001 is already installed \(it runs .*--service\): run --uninstall first/,
  );
  await rejects(
    installWindowsService(spec, { sc: sc({ create: 1078 }), reg }),
    /The display name "BROKER SERVICE" is used by another service: choose another SERVICE_DISPLAY_NAME/,
  );
  await rejects(
    uninstallWindowsService("Y", { sc: sc({}), reg }),
    /The service Y is not installed/,
  );
  calls.length = 0;
  deepEqual(
    await uninstallWindowsService("X", { sc: sc({ stop: 1062 }), reg }),
    ["sc.exe delete X"],
    "a stopped service is just deleted",
  );
  deepEqual(calls.map((c) => c[0]), ["stop", "delete"]);
});

Deno.test("Windows: a service broker-server did not install is never stopped nor deleted, and is named", async () => {
  const calls: string[][] = [];
  const sc: ToolRunner = (args) => {
    calls.push(args);
    return Promise.resolve(
      args[0] === "create" ? { code: 1073, output: "[SC] CreateService FAILED 1073" } : { code: 0, output: "" },
    );
  };
  const reg = fakeReg({
    [spec.name]: totvsService,
    // Our description but another program: not ours either.
    COPYCAT: { imagePath: "C:\\other\\tool.exe", description: ourService(spec).description },
  });
  await rejects(
    uninstallWindowsService(spec.name, { sc, reg }),
    /Refusing to remove the service XXX_TOTVS_BALANCE_SC_001: broker-server did not install it \(it runs "C:\\TOTVS\\bin\\appserver\\appserver\.exe" -balance_smart_client_desktop\)/,
  );
  await rejects(uninstallWindowsService("COPYCAT", { sc, reg }), /Refusing to remove the service COPYCAT/);
  deepEqual(calls, [], "nothing was stopped or deleted");
  await rejects(
    installWindowsService(spec, { sc, reg }),
    /The service name XXX_TOTVS_BALANCE_SC_001 is taken by another service \(it runs "C:\\TOTVS\\bin\\appserver\\appserver\.exe" -balance_smart_client_desktop\): choose another SERVICE_NAME/,
  );
  deepEqual(calls.map((c) => c[0]), ["create"], "a name taken by another service is not deleted to undo the install");
  await rejects(uninstallWindowsService("a\\b", { sc, reg }), RangeError);
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

Deno.test("systemctl is given the unit's full name: a SERVICE_NAME that ends like another unit type never enables, stops or disables that unit", async () => {
  const root = await Deno.makeTempDir();
  const host = fakeHost(root);
  const named = { ...spec, name: "ssh.socket" }; // or multi-user.target, cron.timer...
  await installSystemd(named, host);
  ok(Deno.statSync(`${root}/etc/systemd/system/ssh.socket.service`).isFile);
  await uninstallSystemd(named.name, host);
  const touched = host.calls.flatMap((args) => args.filter((a) => !a.startsWith("-") && a !== "daemon-reload"))
    .filter((a) => a !== "enable" && a !== "disable");
  deepEqual(touched, ["ssh.socket.service", "ssh.socket.service"], "only our unit was enabled and disabled");
  await Deno.remove(root, { recursive: true });
});

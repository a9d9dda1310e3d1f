/**
 * `deno task build`: compiles broker-server and broker-client into
 * standalone executables for x86_64 Linux and Windows under dist/, with the
 * permissions they need embedded, and copies the example configuration
 * beside them.
 *
 * `deno compile` needs the Deno runtime (denort) for each target, which it
 * downloads from Deno's server. Without internet access, point DENORT_BIN at
 * a denort binary for the target you build (and pass --target); the build
 * says so plainly when the download fails.
 *
 * Usage: deno task build [--target x86_64-unknown-linux-gnu|x86_64-pc-windows-msvc]...
 * @module
 */

import { parseArgs } from "node:util";
import { type Program, runtimeFlags } from "../src/runtime_flags.ts";

/** Targets we ship. */
export const TARGETS = ["x86_64-unknown-linux-gnu", "x86_64-pc-windows-msvc"] as const;

/**
 * The programs: which one (for its permissions and V8 flags, in
 * src/runtime_flags.ts), entry file, executable name, and the example config
 * shipped beside it.
 */
export const PROGRAMS: readonly { program: Program; entry: string; name: string; example: string }[] = [
  { program: "server", entry: "server.ts", name: "broker-server", example: "examples/appserver.ini" },
  { program: "client", entry: "client.ts", name: "broker-client", example: "examples/smartclient.ini" },
];

/** The console control handler's worker (src/ops/console_control.ts), which each program starts on Windows. */
export const CONSOLE_WORKER = "src/ops/console_control_worker.ts";

/** One `deno compile` run. */
export interface CompileStep {
  /** Target triple. */
  target: string;
  /** Output file. */
  output: string;
  /** Arguments after `deno`. */
  args: string[];
}

/** The compile steps for `targets`, into `outDir`. */
export function planBuild(targets: readonly string[], outDir = "dist"): CompileStep[] {
  for (const target of targets) {
    if (!(TARGETS as readonly string[]).includes(target)) {
      throw new RangeError(`Cannot build for target "${target}": expected one of ${TARGETS.join(", ")}`);
    }
  }
  return targets.flatMap((target) =>
    PROGRAMS.map((program) => {
      const output = `${outDir}/${program.name}-${target}${target.includes("windows") ? ".exe" : ""}`;
      return {
        target,
        output,
        args: [
          "compile",
          ...runtimeFlags(program.program),
          "--target",
          target,
          "--output",
          output,
          // Workers are not found by deno compile's module graph: the console control handler's is named here.
          "--include",
          CONSOLE_WORKER,
          program.entry,
        ],
      };
    })
  );
}

/** Explains a failed compile in the administrator's terms. */
export function explainCompileFailure(stderr: string, target: string, denortBin: string | undefined): string {
  if (/Could not find denort/.test(stderr)) {
    return `DENORT_BIN points to "${denortBin}", which does not exist: set it to a denort binary for ${target}`;
  }
  if (/dl\.deno\.land|error sending request|dns error/.test(stderr)) {
    return `deno compile must download the Deno runtime (denort) for ${target} from dl.deno.land, and this machine cannot reach it. ` +
      `Build on a machine with internet access, or download denort-${target}.zip for this Deno version elsewhere, unzip it, ` +
      `and run: DENORT_BIN=/path/to/denort deno task build --target ${target}`;
  }
  return stderr.trim().split("\n").slice(-3).join("\n");
}

async function main(): Promise<number> {
  const { values } = parseArgs({ args: Deno.args, options: { target: { type: "string", multiple: true } } });
  const denortBin = Deno.env.get("DENORT_BIN");
  let targets: string[] = values.target ?? [...TARGETS];
  if (denortBin && !values.target) {
    // One denort binary serves one target: build only the host's.
    const host = Deno.build.os === "windows" ? "x86_64-pc-windows-msvc" : "x86_64-unknown-linux-gnu";
    console.log(`DENORT_BIN is set: building for ${host} only (pass --target to choose)`);
    targets = [host];
  }
  const steps = planBuild(targets);
  await Deno.mkdir("dist", { recursive: true });
  for (const step of steps) {
    console.log(`Building ${step.output}`);
    const out = await new Deno.Command(Deno.execPath(), { args: step.args, stdout: "inherit", stderr: "piped" })
      .output();
    if (!out.success) {
      console.error(
        `Cannot build ${step.output}: ${
          explainCompileFailure(new TextDecoder().decode(out.stderr), step.target, denortBin)
        }`,
      );
      return 1;
    }
  }
  for (const program of PROGRAMS) {
    const name = program.example.split("/").pop() as string;
    await Deno.copyFile(program.example, `dist/${name}.example`);
  }
  console.log("Done: executables and example configuration files are in dist/");
  return 0;
}

if (import.meta.main) Deno.exit(await main());

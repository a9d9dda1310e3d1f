import { deepEqual, equal, match, throws } from "node:assert/strict";
import { explainCompileFailure, planBuild } from "../tools/build.ts";
import { runtimeFlags, V8_FLAGS_ARG } from "../src/runtime_flags.ts";

Deno.test("the build compiles both programs for Linux and Windows with their permissions", () => {
  const steps = planBuild(["x86_64-unknown-linux-gnu", "x86_64-pc-windows-msvc"]);
  deepEqual(steps.map((s) => s.output), [
    "dist/broker-server-x86_64-unknown-linux-gnu",
    "dist/broker-client-x86_64-unknown-linux-gnu",
    "dist/broker-server-x86_64-pc-windows-msvc.exe",
    "dist/broker-client-x86_64-pc-windows-msvc.exe",
  ]);
  deepEqual(steps[2]?.args, [
    "compile",
    "--v8-flags=--max-semi-space-size=2",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-sys",
    "--allow-run",
    "--allow-ffi",
    "--target",
    "x86_64-pc-windows-msvc",
    "--output",
    "dist/broker-server-x86_64-pc-windows-msvc.exe",
    "--include",
    "src/ops/console_control_worker.ts",
    "server.ts",
  ]);
  throws(() => planBuild(["aarch64-apple-darwin"]), /Cannot build for target "aarch64-apple-darwin"/);
});

Deno.test("a compile that cannot download its runtime is explained, with DENORT_BIN as the way out", () => {
  const offline =
    "error: Writing deno compile executable\nCaused by:\n    1: error sending request for url (https://dl.deno.land/release/v2.9.6/denort-x86_64-pc-windows-msvc.zip): dns error";
  match(
    explainCompileFailure(offline, "x86_64-pc-windows-msvc", undefined),
    /cannot reach it.*DENORT_BIN=\/path\/to\/denort deno task build --target x86_64-pc-windows-msvc/,
  );
  equal(
    explainCompileFailure("Caused by:\n 0: Could not find denort at '/x'", "x86_64-unknown-linux-gnu", "/x"),
    'DENORT_BIN points to "/x", which does not exist: set it to a denort binary for x86_64-unknown-linux-gnu',
  );
});

Deno.test("deno task build explains a DENORT_BIN that points nowhere", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tools/build.ts", "--target", "x86_64-unknown-linux-gnu"],
    env: { DENORT_BIN: "/nonexistent/denort" },
  }).output();
  equal(out.code, 1);
  match(new TextDecoder().decode(out.stderr), /DENORT_BIN points to "\/nonexistent\/denort", which does not exist/);
});

Deno.test("deno task server and client run with the flags of src/runtime_flags.ts, as the compiled programs do", async () => {
  const tasks = JSON.parse(await Deno.readTextFile("deno.json")).tasks as Record<string, string>;
  for (const program of ["server", "client"] as const) {
    equal(tasks[program], `deno run ${runtimeFlags(program).join(" ")} ${program}.ts`, `deno task ${program}`);
  }
  for (const step of planBuild(["x86_64-unknown-linux-gnu"])) {
    const program = step.output.includes("broker-server") ? "server" : "client";
    deepEqual(step.args.slice(1, -7), runtimeFlags(program), step.output);
    equal(step.args.includes(V8_FLAGS_ARG), true);
  }
});

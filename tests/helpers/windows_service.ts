/**
 * Running sc.exe and broker-server's own command line (`deno run server.ts`)
 * for the Windows service tests.
 * @module
 */

import { fileURLToPath } from "node:url";

/** What a command said (stdout and stderr) and its exit code. */
export interface CommandResult {
  code: number;
  text: string;
}

async function run(program: string, args: string[]): Promise<CommandResult> {
  const out = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" }).output();
  return { code: out.code, text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr) };
}

/** sc.exe with `args`. */
export function sc(...args: string[]): Promise<CommandResult> {
  return run("sc.exe", args);
}

/** broker-server (server.ts) with `args`, to its end. */
export function serverCli(...args: string[]): Promise<CommandResult> {
  const entry = fileURLToPath(new URL("../../server.ts", import.meta.url));
  return run(Deno.execPath(), ["run", "-A", entry, ...args]);
}

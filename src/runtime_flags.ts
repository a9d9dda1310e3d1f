/**
 * The Deno flags both programs run with, wherever they are started from:
 * the `deno task` commands (deno.json cannot import this module, so a test
 * compares its tasks with it), the compiled executables (`deno compile`
 * embeds them) and a service installed from source.
 *
 * `--max-semi-space-size=2` caps V8's young generation at 2 MiB per
 * semi-space (default 16 MiB on 64-bit). A broker holding thousands of
 * sessions allocates short-lived objects at a steady pace (heartbeats,
 * frames) and, after a burst of logins, V8 grows the young generation to its
 * maximum and keeps it. Collections of a small young generation are more
 * frequent but short; docs/performance.md has the figures.
 * @module
 */

/** The V8 flags, comma-separated as `--v8-flags` takes them. */
export const V8_FLAGS = "--max-semi-space-size=2";

/** The Deno CLI argument that applies them. */
export const V8_FLAGS_ARG = `--v8-flags=${V8_FLAGS}`;

/** The two programs. */
export type Program = "server" | "client";

/**
 * Deno permissions per program: network, config and log files, environment
 * and system information; FFI for the Windows console control handler
 * (kernel32); broker-server also installs itself as a service (systemctl,
 * sc.exe) and speaks the Windows service protocol through FFI.
 */
export const PERMISSIONS: Readonly<Record<Program, readonly string[]>> = {
  server: ["--allow-net", "--allow-read", "--allow-write", "--allow-env", "--allow-sys", "--allow-run", "--allow-ffi"],
  client: ["--allow-net", "--allow-read", "--allow-write", "--allow-env", "--allow-sys", "--allow-ffi"],
};

/** What `deno run` or `deno compile` needs before the entry file: the V8 flags, then the permissions. */
export function runtimeFlags(program: Program): string[] {
  return [V8_FLAGS_ARG, ...PERMISSIONS[program]];
}

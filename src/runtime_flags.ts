/**
 * V8 settings both programs run with, wherever they are started from: the
 * `deno task` commands, the compiled executables (`deno compile` embeds
 * them) and a service installed from source.
 *
 * `--max-semi-space-size=2` caps V8's young generation at 2 MiB per
 * semi-space (default 16 MiB on 64-bit). A broker holding 2,000 sessions
 * allocates short-lived objects at a steady pace (heartbeats, frames) and,
 * after a burst of logins, V8 grows the young generation to its maximum and
 * keeps it: broker-server then sat at 180 MiB instead of 143 MiB with this
 * cap. Collections of a small young generation are more frequent but short,
 * and bulk throughput and round-trip times did not change measurably
 * (`deno task bench`, docs/performance.md).
 * @module
 */

/** The V8 flags, comma-separated as `--v8-flags` takes them. */
export const V8_FLAGS = "--max-semi-space-size=2";

/** The Deno CLI argument that applies them. */
export const V8_FLAGS_ARG = `--v8-flags=${V8_FLAGS}`;

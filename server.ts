/**
 * broker-server entry point: resilient broker for TOTVS Protheus, proxy side.
 * @module
 */

import { shutdownSignal } from "./src/ops/signals.ts";
import { serverMain } from "./src/server/main.ts";

if (import.meta.main) {
  Deno.exit(await serverMain(Deno.args, { signal: shutdownSignal() }));
}

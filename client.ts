/**
 * broker-client entry point: resilient broker for TOTVS Protheus, Smart Client side.
 * @module
 */

import { clientMain } from "./src/client/main.ts";
import { shutdownSignal } from "./src/ops/signals.ts";

if (import.meta.main) {
  Deno.exit(await clientMain(Deno.args, { signal: shutdownSignal() }));
}

/**
 * Assertion helpers for configuration errors.
 * @module
 */

import { ConfigError } from "../../src/config/ini.ts";

/** Matches a ConfigError whose message fits `expected` (and shows the message when it does not). */
export function configError(expected: RegExp): (err: unknown) => boolean {
  return (err) => {
    if (err instanceof ConfigError && expected.test(err.message)) return true;
    throw new Error(`Expected a ConfigError matching ${expected}, got: ${err}`);
  };
}

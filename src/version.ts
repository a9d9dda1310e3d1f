/**
 * The product version, shown by `--version`, in logs and on the status page.
 * @module
 */

/** Version of broker-server and broker-client (they are released together). */
export const VERSION = "0.1.0";

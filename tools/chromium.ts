/**
 * Headless Chromium for the status page test and screenshot: where it is,
 * and the flags that keep it quiet on a machine without internet.
 * @module
 */

/** Path of Chromium, or undefined when it is not installed. */
export function findChromium(): string | undefined {
  return ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
}

/** Headless flags; without the networking ones Chromium keeps calling home and failing. */
export function headlessArgs(profileDir: string): string[] {
  return [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    `--user-data-dir=${profileDir}`,
  ];
}

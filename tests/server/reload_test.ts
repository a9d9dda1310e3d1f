import { equal, ok } from "node:assert/strict";
import { watchConfig } from "../../src/server/reload.ts";
import { within } from "../../src/session/transport.ts";

Deno.test("a change to the file on disk triggers one reload after the debounce", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/appserver.ini`;
  await Deno.writeTextFile(path, "[A]\n");
  let reloads = 0;
  let reloaded: (() => void) | undefined;
  const done = new Promise<void>((resolve) => reloaded = resolve);
  const watcher = watchConfig(path, () => {
    reloads++;
    reloaded?.();
    return Promise.resolve();
  }, { debounceMs: 300, sighup: false });
  // Several writes in a row, as an editor does: one reload.
  await Deno.writeTextFile(path, "[A]\nx=1\n");
  await Deno.writeTextFile(path, "[A]\nx=2\n");
  await Deno.writeTextFile(`${dir}/other.ini`, "unrelated");
  ok(await within(done, 2_000), "reloaded");
  await new Promise((r) => setTimeout(r, 600)); // no second reload follows
  equal(reloads, 1);
  await watcher.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name: "SIGHUP triggers a reload",
  ignore: Deno.build.os === "windows",
  async fn() {
    const dir = await Deno.makeTempDir();
    let reloaded: (() => void) | undefined;
    const done = new Promise<void>((resolve) => reloaded = resolve);
    const watcher = watchConfig(`${dir}/appserver.ini`, () => {
      reloaded?.();
      return Promise.resolve();
    }, { debounceMs: 10 });
    Deno.kill(Deno.pid, "SIGHUP");
    ok(await within(done, 2_000), "reloaded on SIGHUP");
    await watcher.close();
    await Deno.remove(dir, { recursive: true });
  },
});

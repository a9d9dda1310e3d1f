import { equal } from "node:assert/strict";
import { perUserLogFile } from "../../src/config/logging.ts";

Deno.test("the per-user log folder: %LOCALAPPDATA% on Windows, $XDG_STATE_HOME or ~/.local/state elsewhere", () => {
  const env = (values: Record<string, string>) => (name: string) => values[name];
  equal(
    perUserLogFile("broker-client.log", {
      os: "windows",
      env: env({ LOCALAPPDATA: "C:\\Users\\ana\\AppData\\Local", HOME: "/x" }),
    }),
    "C:\\Users\\ana\\AppData\\Local\\protheus-broker\\broker-client.log",
  );
  equal(perUserLogFile("broker-client.log", { os: "windows", env: env({}) }), null, "no folder named: none");
  equal(
    perUserLogFile("client.log", { os: "linux", env: env({ XDG_STATE_HOME: "/home/ana/.state", HOME: "/home/ana" }) }),
    "/home/ana/.state/protheus-broker/client.log",
  );
  equal(
    perUserLogFile("client.log", { os: "linux", env: env({ HOME: "/home/ana" }) }),
    "/home/ana/.local/state/protheus-broker/client.log",
  );
  equal(
    perUserLogFile("client.log", { os: "linux", env: env({ XDG_STATE_HOME: "relative/state", HOME: "/home/ana" }) }),
    "/home/ana/.local/state/protheus-broker/client.log",
    "a relative XDG_STATE_HOME is ignored, as the XDG specification says",
  );
  equal(perUserLogFile("client.log", { os: "linux", env: env({}) }), null);
});

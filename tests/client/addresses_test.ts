import { deepEqual } from "node:assert/strict";
import { LocalAddresses, plainAddress } from "../../src/client/addresses.ts";

Deno.test("LocalAddresses: an address listed before and not now is gone; nothing is gone at the first look", () => {
  const addresses = new LocalAddresses();
  deepEqual([...addresses.update(["127.0.0.1", "192.0.2.2", "fe80::1%eth0"])], []);
  deepEqual([...addresses.update(["127.0.0.1", "192.0.2.2", "fe80::1%eth0"])], []);
  deepEqual([...addresses.update(["127.0.0.1", "192.0.2.3"])], ["192.0.2.2", "fe80::1"]);
  deepEqual([...addresses.update(["127.0.0.1", "192.0.2.3"])], [], "gone once, not again");
  deepEqual(
    [...addresses.update(["127.0.0.1", "192.0.2.2", "192.0.2.3"])],
    [],
    "an address that comes back is not gone",
  );
});

Deno.test("plainAddress drops an IPv6 zone, as sockets and interface lists may write it differently", () => {
  deepEqual(plainAddress("fe80::1%eth0"), "fe80::1");
  deepEqual(plainAddress("192.0.2.2"), "192.0.2.2");
});

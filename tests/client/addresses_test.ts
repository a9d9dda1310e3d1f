import { deepEqual, ok } from "node:assert/strict";
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

Deno.test("plainAddress: one address however a socket or an interface list writes it (IPv4-mapped, upper case, zone)", () => {
  deepEqual(plainAddress("::ffff:192.0.2.2"), "192.0.2.2", "a dual-stack socket's IPv4 address");
  deepEqual(plainAddress("::FFFF:192.0.2.2"), "192.0.2.2");
  deepEqual(plainAddress("FE80::1%eth0"), "fe80::1");
  deepEqual(plainAddress("2001:DB8::2"), "2001:db8::2");
  // As broker-client compares them: the link's address, as its socket said, against what the list no longer shows.
  const addresses = new LocalAddresses();
  addresses.update(["192.0.2.2", "2001:db8::2"]);
  const gone = addresses.update([]);
  ok(gone.has(plainAddress("::ffff:192.0.2.2")), "a link from ::ffff:192.0.2.2 is from a gone address");
  ok(gone.has(plainAddress("2001:DB8::2")));
});

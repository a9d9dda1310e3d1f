/**
 * Which of this machine's addresses went away: when the PC roams (Wi-Fi to
 * 4G, a new VPN lease), the address its links were made from disappears,
 * and those links can never work again. broker-client looks twice a second
 * (one look for every session, not one per session) and races a new link
 * at once for each session whose link was made from an address that is gone,
 * instead of waiting for a probe to go unanswered.
 *
 * Only an address seen in an earlier look counts as gone, so an address
 * written differently by the system and by the socket (or a link from an
 * address the list never shows) never makes a link look dead.
 * @module
 */

/** How often broker-client lists the machine's addresses (ms). */
export const ADDRESS_CHECK_MS = 500;

/**
 * One spelling of an address, however a socket or an interface list writes
 * it: without an IPv6 zone (`fe80::1%eth0` → `fe80::1`), in lower case, and
 * an IPv4-mapped IPv6 address (a dual-stack socket's) as the IPv4 address
 * (`::ffff:192.0.2.2` → `192.0.2.2`). Otherwise a link's address never
 * matches the list, and its going away is never noticed.
 */
export function plainAddress(address: string): string {
  const zone = address.indexOf("%");
  const plain = (zone < 0 ? address : address.slice(0, zone)).toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(plain);
  return mapped ? mapped[1] as string : plain;
}

/** The machine's addresses from one look to the next (pure: the caller lists them). */
export class LocalAddresses {
  #seen: Set<string> | null = null;

  /** Takes the addresses listed now; returns those listed last time and not now. */
  update(now: readonly string[]): Set<string> {
    const current = new Set(now.map(plainAddress));
    const gone = new Set<string>();
    for (const address of this.#seen ?? []) if (!current.has(address)) gone.add(address);
    this.#seen = current;
    return gone;
  }
}

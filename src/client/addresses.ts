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

/** The address as a socket reports it, without an IPv6 zone (`fe80::1%eth0` → `fe80::1`). */
export function plainAddress(address: string): string {
  const zone = address.indexOf("%");
  return zone < 0 ? address : address.slice(0, zone);
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

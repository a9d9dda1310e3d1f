/**
 * A virtual clock for simulation: time stands still until the simulation
 * moves it to the next timer. Timers due at the same moment run in the
 * order they were set, so a world replays exactly from its seed.
 * @module
 */

import type { Clock, TimerHandle } from "../../src/session/clock.ts";

interface Timer {
  id: number;
  at: number;
  seq: number;
  fn: () => void;
  /** Repeat interval, or 0 for a one-shot timer. */
  every: number;
}

/** A Clock whose time moves only when runNext() is called. */
export class VirtualClock implements Clock {
  #now: number;
  #heap: Timer[] = [];
  #live = new Map<number, Timer>();
  #nextId = 1;
  #seq = 0;

  /** A clock starting at `start` ms. */
  constructor(start = 1_000_000) {
    this.#now = start;
  }

  /** The current virtual time (ms). */
  now(): number {
    return this.#now;
  }

  /** Timers set and not yet fired or cleared. */
  get pending(): number {
    return this.#live.size;
  }

  /** When the next timer fires, or null when none is set. */
  get nextAt(): number | null {
    this.#dropCleared();
    return this.#heap[0]?.at ?? null;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.#add(fn, ms, 0);
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    return this.#add(fn, ms, Math.max(1, ms));
  }

  clear(handle: TimerHandle | undefined): void {
    if (typeof handle === "number") this.#live.delete(handle);
  }

  /**
   * Moves time to the earliest timer and runs it (an interval is set again
   * first). Returns false when no timer is left.
   */
  runNext(): boolean {
    this.#dropCleared();
    const timer = this.#pop();
    if (!timer) return false;
    this.#now = Math.max(this.#now, timer.at);
    if (timer.every > 0) {
      timer.at = this.#now + timer.every;
      timer.seq = this.#seq++;
      this.#push(timer);
    } else {
      this.#live.delete(timer.id);
    }
    timer.fn();
    return true;
  }

  /** Moves time forward by `ms`, running the timers due meanwhile in order. */
  advance(ms: number): void {
    const until = this.#now + ms;
    while (this.nextAt !== null && (this.nextAt as number) <= until) this.runNext();
    this.#now = until;
  }

  /** Moves time forward by `ms` without running anything (a process that was not scheduled). */
  jump(ms: number): void {
    this.#now += ms;
  }

  #add(fn: () => void, ms: number, every: number): TimerHandle {
    const delay = Number.isFinite(ms) && ms > 0 ? ms : 0;
    const timer: Timer = { id: this.#nextId++, at: this.#now + delay, seq: this.#seq++, fn, every };
    this.#live.set(timer.id, timer);
    this.#push(timer);
    return timer.id;
  }

  #dropCleared(): void {
    while (this.#heap.length > 0 && this.#live.get((this.#heap[0] as Timer).id) !== this.#heap[0]) this.#pop();
  }

  #before(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  #push(timer: Timer): void {
    const heap = this.#heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const child = heap[i] as Timer;
      const above = heap[parent] as Timer;
      if (!this.#before(child, above)) break;
      heap[i] = above;
      heap[parent] = child;
      i = parent;
    }
  }

  #pop(): Timer | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && this.#before(heap[l] as Timer, heap[m] as Timer)) m = l;
        if (r < heap.length && this.#before(heap[r] as Timer, heap[m] as Timer)) m = r;
        if (m === i) break;
        const moved = heap[i] as Timer;
        heap[i] = heap[m] as Timer;
        heap[m] = moved;
        i = m;
      }
    }
    return top;
  }
}

/**
 * A fixed set of slots (the engine's sequences) behind a bounded queue. Admission
 * reserves capacity up front, so a request that will not fit is refused (503) before any
 * work is done; a waiter that gives up leaves the queue at once.
 *
 * The queue is fair across owners (API keys): a freed slot goes to the owner served
 * longest ago among those waiting, first in first out within an owner, so one key's
 * burst does not starve the others. With a single owner it is plain FIFO.
 */

interface Waiter<Slot> {
  readonly owner: string;
  readonly resolve: (slot: Slot) => void;
}

export class SlotQueue<Slot> {
  readonly #free: Slot[];
  readonly #waiters: Array<Waiter<Slot>> = [];
  readonly #capacity: number;
  /** Per owner, the tick at which it was last handed a slot. */
  readonly #lastServed = new Map<string, number>();
  #tick = 0;
  #reserved = 0;

  /** `maxWaiting` requests may wait beyond those running on `slots`. */
  constructor(slots: readonly Slot[], maxWaiting: number) {
    this.#free = [...slots];
    this.#capacity = slots.length + maxWaiting;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  get busy(): number {
    return this.#reserved - this.#waiters.length;
  }

  /** Reserves a place, or returns false when running plus waiting requests are at capacity. */
  tryReserve(): boolean {
    if (this.#reserved >= this.#capacity) return false;
    this.#reserved += 1;
    return true;
  }

  /** Drops a reservation that never acquired a slot. */
  cancelReservation(): void {
    this.#reserved -= 1;
  }

  /**
   * Waits for a slot in arrival order. When several are free, `choose` picks one (by
   * index into the free slots; defaults to the most recently released). On abort the
   * waiter leaves the queue and the promise rejects with the signal's reason; the
   * reservation stays for the caller to cancel.
   */
  acquire(signal: AbortSignal, choose?: (free: readonly Slot[]) => number, owner = ""): Promise<Slot> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.#waiters.length === 0 && this.#free.length > 0) {
      const index = choose === undefined ? this.#free.length - 1 : choose(this.#free);
      const [slot] = this.#free.splice(Math.min(Math.max(index, 0), this.#free.length - 1), 1);
      if (slot !== undefined) {
        this.#served(owner);
        return Promise.resolve(slot);
      }
    }
    return new Promise<Slot>((resolve, reject) => {
      const waiter: Waiter<Slot> = {
        owner,
        resolve: (acquired: Slot) => {
          signal.removeEventListener("abort", onAbort);
          resolve(acquired);
        },
      };
      const onAbort = (): void => {
        const index = this.#waiters.indexOf(waiter);
        if (index !== -1) this.#waiters.splice(index, 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** Returns a slot and ends its reservation; the next waiter in fair order gets it. */
  release(slot: Slot): void {
    this.#reserved -= 1;
    const index = this.#nextWaiter();
    if (index === -1) {
      this.#free.push(slot);
      return;
    }
    const [next] = this.#waiters.splice(index, 1);
    if (next === undefined) return;
    this.#served(next.owner);
    next.resolve(slot);
  }

  /** The oldest waiter of the owner served longest ago (never served counts as longest). */
  #nextWaiter(): number {
    let best = -1;
    let bestServed = Infinity;
    this.#waiters.forEach((waiter, index) => {
      const served = this.#lastServed.get(waiter.owner) ?? -1;
      if (best === -1 || served < bestServed) {
        best = index;
        bestServed = served;
      }
    });
    return best;
  }

  #served(owner: string): void {
    this.#tick += 1;
    this.#lastServed.set(owner, this.#tick);
  }
}

/**
 * A fixed set of slots (the engine's sequences) behind a bounded first-in-first-out
 * queue. Admission reserves capacity up front, so a request that will not fit is
 * refused (503) before any work is done; a waiter that gives up leaves the queue at once.
 */

export class SlotQueue<Slot> {
  readonly #free: Slot[];
  readonly #waiters: Array<{ resolve: (slot: Slot) => void }> = [];
  readonly #capacity: number;
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
  acquire(signal: AbortSignal, choose?: (free: readonly Slot[]) => number): Promise<Slot> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.#waiters.length === 0 && this.#free.length > 0) {
      const index = choose === undefined ? this.#free.length - 1 : choose(this.#free);
      const [slot] = this.#free.splice(Math.min(Math.max(index, 0), this.#free.length - 1), 1);
      if (slot !== undefined) return Promise.resolve(slot);
    }
    return new Promise<Slot>((resolve, reject) => {
      const waiter = {
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

  /** Returns a slot and ends its reservation; the oldest waiter gets it. */
  release(slot: Slot): void {
    this.#reserved -= 1;
    const next = this.#waiters.shift();
    if (next !== undefined) next.resolve(slot);
    else this.#free.push(slot);
  }
}

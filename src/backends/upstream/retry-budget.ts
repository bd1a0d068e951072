/**
 * A pool-wide cap on retries, so that failover cannot multiply load on a struggling fleet
 * (the retry storm): over a sliding window, retries may be at most `ratio` of the requests
 * sent, plus `minPerSecond` so that a quiet pool can still fail over.
 */
const WINDOW_MS = 10_000;
const SLOTS = 10;

export class RetryBudget {
  readonly #ratio: number;
  readonly #minPerSecond: number;
  readonly #requests = new Array<number>(SLOTS).fill(0);
  readonly #retries = new Array<number>(SLOTS).fill(0);
  #slot = 0;
  #slotStart = 0;

  constructor(ratio: number, minPerSecond: number) {
    this.#ratio = ratio;
    this.#minPerSecond = minPerSecond;
  }

  /** A first attempt was made. */
  request(now = Date.now()): void {
    this.#advance(now);
    this.#requests[this.#slot] = (this.#requests[this.#slot] ?? 0) + 1;
  }

  /** Takes one retry from the budget, or says there is none left. */
  tryRetry(now = Date.now()): boolean {
    this.#advance(now);
    const requests = this.#requests.reduce((sum, value) => sum + value, 0);
    const retries = this.#retries.reduce((sum, value) => sum + value, 0);
    const allowed = this.#ratio * requests + (this.#minPerSecond * WINDOW_MS) / 1000;
    if (retries + 1 > allowed) return false;
    this.#retries[this.#slot] = (this.#retries[this.#slot] ?? 0) + 1;
    return true;
  }

  #advance(now: number): void {
    const slotMs = WINDOW_MS / SLOTS;
    if (this.#slotStart === 0) this.#slotStart = now;
    let steps = Math.floor((now - this.#slotStart) / slotMs);
    if (steps <= 0) return;
    this.#slotStart += steps * slotMs;
    steps = Math.min(steps, SLOTS);
    for (let step = 0; step < steps; step++) {
      this.#slot = (this.#slot + 1) % SLOTS;
      this.#requests[this.#slot] = 0;
      this.#retries[this.#slot] = 0;
    }
  }
}

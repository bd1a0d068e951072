/**
 * Passive health of one upstream: `closed` (in use), `open` (ejected after
 * `failureThreshold` consecutive failures, for a backoff), `half_open` (the backoff is over:
 * one trial request may go; success closes, failure re-opens with the backoff doubled, up to
 * `maxBackoffMs`). A passing active health check after the backoff closes it too.
 */
export type BreakerState = "closed" | "open" | "half_open";

export interface BreakerOptions {
  readonly failureThreshold: number;
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
}

export class CircuitBreaker {
  readonly #options: BreakerOptions;
  #state: BreakerState = "closed";
  #consecutiveFailures = 0;
  #backoffMs: number;
  #openUntil = 0;
  #trialInFlight = false;

  constructor(options: BreakerOptions) {
    this.#options = options;
    this.#backoffMs = options.backoffMs;
  }

  state(now = Date.now()): BreakerState {
    if (this.#state === "open" && now >= this.#openUntil) this.#state = "half_open";
    return this.#state;
  }

  get consecutiveFailures(): number {
    return this.#consecutiveFailures;
  }

  /** When an open breaker lets a trial through; null unless open. */
  retryAt(now = Date.now()): number | null {
    return this.state(now) === "open" ? this.#openUntil : null;
  }

  /** May a request go to this upstream now? (A half-open one takes one trial at a time.) */
  available(now = Date.now()): boolean {
    const state = this.state(now);
    return state === "closed" || (state === "half_open" && !this.#trialInFlight);
  }

  /** A request was sent; in the half-open state it is the trial. */
  attempt(now = Date.now()): void {
    if (this.state(now) === "half_open") this.#trialInFlight = true;
  }

  success(): void {
    this.#state = "closed";
    this.#consecutiveFailures = 0;
    this.#backoffMs = this.#options.backoffMs;
    this.#trialInFlight = false;
  }

  failure(now = Date.now()): void {
    this.#consecutiveFailures += 1;
    const state = this.state(now);
    if (state === "half_open") {
      this.#backoffMs = Math.min(this.#backoffMs * 2, this.#options.maxBackoffMs);
      this.#open(now);
    } else if (state === "closed" && this.#consecutiveFailures >= this.#options.failureThreshold) {
      this.#open(now);
    }
  }

  /** An attempt that ended neither way (e.g. the client left) frees the trial slot. */
  settle(): void {
    this.#trialInFlight = false;
  }

  #open(now: number): void {
    this.#state = "open";
    this.#openUntil = now + this.#backoffMs;
    this.#trialInFlight = false;
  }
}

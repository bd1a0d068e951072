/**
 * A rate over a sliding window, measured from a monotonic counter (tokens generated
 * since start): `perSecond()` is the counter's growth between the oldest sample still in
 * the window and now. Sampling is the caller's (e.g. once a second); reads sample too.
 */

export interface TokenRateOptions {
  /** How far back the rate looks, in ms. Defaults to 5000. */
  readonly windowMs?: number;
  readonly now?: () => number;
}

interface Sample {
  readonly at: number;
  readonly count: number;
}

export class TokenRate {
  readonly #read: () => number;
  readonly #windowMs: number;
  readonly #now: () => number;
  #samples: Sample[] = [];

  constructor(read: () => number, options: TokenRateOptions = {}) {
    this.#read = read;
    this.#windowMs = options.windowMs ?? 5000;
    this.#now = options.now ?? Date.now;
  }

  sample(): void {
    const at = this.#now();
    this.#samples.push({ at, count: this.#read() });
    // Keep one sample at or beyond the window's edge, so the window is always covered.
    while (this.#samples.length > 2 && (this.#samples[1]?.at ?? at) <= at - this.#windowMs) this.#samples.shift();
  }

  /** Units per second over the window; 0 until two samples lie at least 100 ms apart. */
  perSecond(): number {
    this.sample();
    const first = this.#samples[0];
    const last = this.#samples[this.#samples.length - 1];
    if (first === undefined || last === undefined || last.at - first.at < 100) return 0;
    return ((last.count - first.count) * 1000) / (last.at - first.at);
  }
}

/**
 * The timers and cancellation of one attempt on one upstream. Each phase (waiting for the
 * first token, then each silence between chunks) has its own deadline, and the whole
 * attempt one more; whichever fires aborts the HTTP request and is remembered so the
 * failure can say which deadline it was. The client's signal aborts it too.
 */
export class UpstreamCall {
  readonly #controller = new AbortController();
  readonly signal: AbortSignal;
  readonly #total: NodeJS.Timeout;
  #phase: NodeJS.Timeout | undefined;
  /** Which deadline fired, in words, or null. */
  timedOut: string | null = null;

  constructor(clientSignal: AbortSignal, totalMs: number) {
    this.signal = AbortSignal.any([clientSignal, this.#controller.signal]);
    this.#total = setTimeout(() => this.#expire(`no complete answer within ${totalMs} ms`), totalMs);
  }

  /** Starts a phase with its own deadline, replacing the previous phase's. */
  phase(description: string, ms: number): void {
    clearTimeout(this.#phase);
    this.#phase = setTimeout(() => this.#expire(description), ms);
  }

  abort(reason: string): void {
    this.#controller.abort(new Error(reason));
  }

  dispose(): void {
    clearTimeout(this.#total);
    clearTimeout(this.#phase);
  }

  #expire(description: string): void {
    this.timedOut = description;
    this.abort(description);
  }
}

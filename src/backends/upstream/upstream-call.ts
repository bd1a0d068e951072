/**
 * The timers and cancellation of one attempt on one upstream. Each phase (waiting for the
 * first token, then each silence between chunks) has its own deadline, and the whole
 * attempt one more; whichever fires aborts the HTTP request and is remembered so the
 * failure can say which deadline it was. The client's signal aborts it too.
 *
 * This runs for every chunk of every streamed answer, so it allocates little: one
 * controller listening to the client's signal (not `AbortSignal.any`, which is slow in
 * Node 20 and leaves weak references for the collector), and one phase timer re-armed
 * with `refresh()` while the phase's length stays the same. A deadline's message is
 * built only when it fires.
 */

/** What a phase waits for, in words, given its length in ms: "no first token within 500 ms". */
export type PhaseDeadline = (ms: number) => string;

export class UpstreamCall {
  readonly #controller = new AbortController();
  readonly signal: AbortSignal = this.#controller.signal;
  readonly #clientSignal: AbortSignal;
  readonly #total: NodeJS.Timeout;
  #phase: NodeJS.Timeout | undefined;
  #phaseMs = 0;
  #phaseDeadline: PhaseDeadline | undefined;
  /** Which deadline fired, in words, or null. */
  timedOut: string | null = null;

  constructor(clientSignal: AbortSignal, totalMs: number) {
    this.#clientSignal = clientSignal;
    if (clientSignal.aborted) this.#controller.abort(clientSignal.reason);
    else clientSignal.addEventListener("abort", this.#onClientAbort, { once: true });
    this.#total = setTimeout(() => this.#expire(`no complete answer within ${totalMs} ms`), totalMs);
  }

  /** Starts a phase with its own deadline, replacing the previous phase's. */
  phase(deadline: PhaseDeadline, ms: number): void {
    this.#phaseDeadline = deadline;
    if (this.#phase !== undefined && this.#phaseMs === ms) {
      this.#phase.refresh();
      return;
    }
    clearTimeout(this.#phase);
    this.#phaseMs = ms;
    this.#phase = setTimeout(this.#onPhaseExpired, ms);
  }

  abort(reason: string): void {
    this.#controller.abort(new Error(reason));
  }

  dispose(): void {
    clearTimeout(this.#total);
    clearTimeout(this.#phase);
    this.#phase = undefined;
    this.#clientSignal.removeEventListener("abort", this.#onClientAbort);
  }

  readonly #onClientAbort = (): void => {
    this.#controller.abort(this.#clientSignal.reason);
  };

  readonly #onPhaseExpired = (): void => {
    this.#phase = undefined; // a fired timer is not refreshed: the next phase gets a new one
    this.#expire(this.#phaseDeadline?.(this.#phaseMs) ?? `a deadline of ${this.#phaseMs} ms`);
  };

  #expire(description: string): void {
    this.timedOut = description;
    this.abort(description);
  }
}

/**
 * The chat requests in flight, for a clean shutdown (SIGTERM): stop taking new ones
 * (503 `server_shutting_down`), let running ones finish up to a deadline, then stop the
 * rest — their streams end with an error event and `[DONE]`, their ledger rows say
 * `stopped`.
 */
import { ApiError } from "../protocol/errors.js";

export interface InFlightRequest {
  /** Aborts when the server stops this request at the drain deadline. */
  readonly signal: AbortSignal;
  /** Ends the request's registration; idempotent. */
  end(): void;
}

export interface DrainResult {
  /** Requests that finished on their own during the drain. */
  readonly finished: number;
  /** Requests stopped at the deadline. */
  readonly stopped: number;
}

export class InFlight {
  readonly #requests = new Set<AbortController>();
  readonly #idleWaiters = new Set<() => void>();
  #draining = false;

  get draining(): boolean {
    return this.#draining;
  }

  get size(): number {
    return this.#requests.size;
  }

  /** Registers a request, or throws 503 `server_shutting_down` once draining. */
  begin(): InFlightRequest {
    if (this.#draining) throw new ApiError("server_shutting_down", "The server is shutting down and takes no new requests. Retry on another replica or shortly.");
    const controller = new AbortController();
    this.#requests.add(controller);
    let ended = false;
    return {
      signal: controller.signal,
      end: () => {
        if (ended) return;
        ended = true;
        this.#requests.delete(controller);
        if (this.#requests.size === 0) for (const wake of this.#idleWaiters) wake();
      },
    };
  }

  /**
   * Stops taking requests, waits up to `deadlineMs` for those in flight, then aborts the
   * rest and waits (at most `graceMs` more) for them to write their last bytes and rows.
   */
  async drain(deadlineMs: number, graceMs = 5000): Promise<DrainResult> {
    this.#draining = true;
    const atStart = this.#requests.size;
    await this.#idle(deadlineMs);
    const stopped = this.#requests.size;
    for (const controller of this.#requests) controller.abort(new ApiError("server_shutting_down", "The server is shutting down."));
    if (stopped > 0) await this.#idle(graceMs);
    return { finished: atStart - stopped, stopped };
  }

  #idle(timeoutMs: number): Promise<void> {
    if (this.#requests.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#idleWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.#idleWaiters.add(done);
    });
  }
}

/**
 * Writes a Server-Sent Events response on a raw Node response: `data: <json>\n\n` per
 * event and `data: [DONE]\n\n` at the end, honouring back-pressure so a slow client
 * slows generation instead of growing a buffer.
 *
 * The events sent in one tick leave together, in one write at the end of the tick (one
 * HTTP chunk, rather than one per event), or as soon as they reach 16 KiB. The headers are
 * not flushed on their own: the route creates the writer only once the first event is in
 * hand and sends it at once, so the headers leave in the same write as the first events.
 */
import { once } from "node:events";
import type { ServerResponse } from "node:http";

const SENT = Promise.resolve();
/** Pending text written at once rather than at the end of the tick, so back-pressure is seen early. */
const WRITE_AT_BYTES = 16 * 1024;

export class SseWriter {
  readonly #response: ServerResponse;
  /** Events sent this tick, not yet written. */
  #pending = "";
  #flushScheduled = false;
  #holding = false;
  /** Set while the socket's buffer is over its limit: sends wait for it to drain. */
  #drained: Promise<void> | undefined;

  constructor(response: ServerResponse, requestId: string, headers: Record<string, string> = {}) {
    this.#response = response;
    response.writeHead(200, {
      ...headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
      "x-request-id": requestId,
    });
  }

  get open(): boolean {
    return !this.#response.destroyed && !this.#response.writableEnded;
  }

  /** Resolves at once, or, while the client is not keeping up, once its buffer drains. */
  send(data: unknown): Promise<void> {
    if (!this.open) return SENT;
    this.#pending += `data: ${JSON.stringify(data)}\n\n`;
    if (this.#holding) return SENT;
    if (this.#pending.length >= WRITE_AT_BYTES) {
      this.#flush();
    } else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      process.nextTick(this.#endOfTick);
    }
    return this.#drained ?? SENT;
  }

  /**
   * Holds what this tick sent and everything sent from now on until `done()`, which writes
   * it all with `[DONE]` in one write. The route holds the end of an answer while it
   * commits the ledger row, rather than writing it in two pieces around the commit.
   */
  hold(): void {
    this.#holding = true;
  }

  /** Writes what is pending and `data: [DONE]`, and ends the response. */
  async done(): Promise<void> {
    if (!this.open) return;
    const text = `${this.#pending}data: [DONE]\n\n`;
    this.#pending = "";
    this.#response.end(text);
  }

  readonly #endOfTick = (): void => {
    this.#flushScheduled = false;
    this.#flush();
  };

  #flush(): void {
    if (this.#holding || this.#pending === "" || !this.open) return;
    const text = this.#pending;
    this.#pending = "";
    if (!this.#response.write(text)) {
      const clear = (): void => {
        this.#drained = undefined;
      };
      // An 'error' rejects once(); the response is then closed and later sends are no-ops.
      this.#drained ??= Promise.race([once(this.#response, "drain"), once(this.#response, "close")]).then(clear, clear);
    }
  }
}

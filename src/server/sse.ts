/**
 * Writes a Server-Sent Events response on a raw Node response: `data: <json>\n\n` per
 * event and `data: [DONE]\n\n` at the end, honouring back-pressure so a slow client
 * slows generation instead of growing a buffer.
 *
 * The headers are not flushed on their own: the route creates the writer only once the
 * first event is in hand and sends it at once, so the headers leave in the same write as
 * the first events (Node corks the socket for the rest of the tick on a chunked write).
 */
import { once } from "node:events";
import type { ServerResponse } from "node:http";

export class SseWriter {
  readonly #response: ServerResponse;
  #holding = false;

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

  async send(data: unknown): Promise<void> {
    await this.#write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /**
   * Holds what this tick already wrote and everything written from now on until `done()`,
   * which sends it all with `[DONE]` in one write. The route holds the end of an answer
   * while it commits the ledger row, rather than writing it in two pieces around the
   * commit. Back-pressure is not waited for while holding: nothing drains until `done()`.
   */
  hold(): void {
    if (this.#holding || !this.open) return;
    this.#holding = true;
    this.#response.cork(); // end() uncorks fully
  }

  async done(): Promise<void> {
    await this.#write("data: [DONE]\n\n");
    if (this.open) this.#response.end();
  }

  async #write(text: string): Promise<void> {
    if (!this.open) return;
    if (!this.#response.write(text) && !this.#holding) {
      await Promise.race([once(this.#response, "drain"), once(this.#response, "close")]);
    }
  }
}

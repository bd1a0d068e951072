// The reply panel: text as it streams in, then what the server said about it —
// finish_reason, stop_reason, token usage — and what the browser measured: time to
// first token and tokens per second.

import { renderError } from "./api.js";
import { formatCount, formatMs, formatRate, formatWireValue } from "./format.js";

export class ReplyView {
  #text;
  #status;
  #stats;
  #error;
  #panel;

  constructor() {
    this.#panel = document.getElementById("reply-panel");
    this.#text = document.getElementById("reply");
    this.#status = document.getElementById("reply-status");
    this.#stats = document.getElementById("reply-stats");
    this.#error = document.getElementById("error");
  }

  get text() {
    return this.#text.textContent ?? "";
  }

  start() {
    this.#text.textContent = "";
    this.#stats.replaceChildren();
    this.#error.hidden = true;
    this.#error.replaceChildren();
    this.#panel.dataset.state = "waiting";
    this.#text.setAttribute("aria-busy", "true");
    this.#status.textContent = "Waiting for the first token…";
  }

  append(text) {
    if (this.#panel.dataset.state === "waiting") {
      this.#panel.dataset.state = "streaming";
      this.#status.textContent = "Generating…";
    }
    this.#text.append(text);
  }

  /**
   * @param {"done" | "stopped" | "error"} state
   * @param {object} result finishReason, stopReason, usage, ttftMs, tokensPerSecond, totalMs, requestId, streamed
   */
  finish(state, result) {
    this.#panel.dataset.state = state;
    this.#text.setAttribute("aria-busy", "false");
    if (state === "stopped") {
      this.#status.textContent = "Stopped: you cancelled the request, and the server stopped generating.";
    } else if (state === "done") {
      this.#status.textContent = `Done: finish_reason ${result.finishReason ?? "—"}.`;
    } else {
      this.#status.textContent = "The server answered with an error.";
    }
    const usage = result.usage ?? null;
    const cached = usage?.prompt_tokens_details?.cached_tokens;
    const rows = [
      ["finish_reason", state === "stopped" ? "— (stopped)" : formatWireValue(result.finishReason), "finish_reason"],
      ["stop_reason", state === "stopped" ? "—" : formatWireValue(result.stopReason), "stop_reason"],
      ["prompt tokens", formatCount(usage?.prompt_tokens), "prompt_tokens"],
      ["completion tokens", formatCount(usage?.completion_tokens), "completion_tokens"],
      ["total tokens", formatCount(usage?.total_tokens), "total_tokens"],
      ["cached tokens", formatCount(cached), "cached_tokens"],
      [result.streamed ? "time to first token" : "time to response", formatMs(result.ttftMs), "ttft"],
      ["tokens per second", formatRate(result.tokensPerSecond), "tokens_per_second"],
      ["total time", formatMs(result.totalMs), "total_time"],
      ["request id", result.requestId ?? "—", "request_id"],
    ];
    if (state === "error") rows.splice(0, rows.length - 2);
    this.#stats.replaceChildren(
      ...rows.map(([label, value, key]) => {
        const row = document.createElement("div");
        row.dataset.stat = key;
        const term = document.createElement("dt");
        term.textContent = label;
        const definition = document.createElement("dd");
        definition.textContent = value;
        row.append(term, definition);
        return row;
      }),
    );
  }

  error(error) {
    renderError(this.#error, error);
  }
}

/**
 * Decode speed: completion tokens after the first, per second between the first and the
 * last token. Without a stream (one body at once) it is tokens over the whole request.
 */
export function tokensPerSecond(completionTokens, firstAt, lastAt, startedAt, streamed) {
  if (typeof completionTokens !== "number") return null;
  if (!streamed) return lastAt > startedAt ? (completionTokens * 1000) / (lastAt - startedAt) : null;
  if (completionTokens < 2 || firstAt === null || lastAt <= firstAt) return null;
  return ((completionTokens - 1) * 1000) / (lastAt - firstAt);
}

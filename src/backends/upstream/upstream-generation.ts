/**
 * The rest of an upstream's answer once its first text arrived (or a whole non-streamed
 * answer), as Parley's generation events. Mid-stream failures end the iteration with an
 * `ApiError` (the route turns it into an error event and `[DONE]`); the client leaving ends
 * it quietly. `close()` cancels the upstream request at once.
 */
import { ApiError } from "../../protocol/errors.js";
import type { Generation, GenerationEvent } from "../backend.js";
import { readChunk, type UpstreamUsage } from "./normalise.js";
import type { PhaseDeadline, UpstreamCall } from "./upstream-call.js";
import { classifyError, redact, transportFailure, UpstreamFailure } from "./upstream-failure.js";
import type { UpstreamServer } from "./upstream-server.js";

/** Reads the chunks of one streamed answer and keeps what the finish event needs. */
export class StreamState {
  finishReason: "stop" | "length" | null = null;
  matchedStop: string | null = null;
  usage: UpstreamUsage | null = null;
  /** Chunks that carried text: the completion-token count when the upstream sends no usage. */
  textChunks = 0;
  done = false;

  /** One SSE data payload → the text it carries ("" for none). Throws on an in-stream error. */
  read(data: string, secrets: readonly string[]): string {
    if (data.trim() === "[DONE]") {
      this.done = true;
      return "";
    }
    const chunk = readChunk(data);
    if (chunk.error !== null) {
      const said = redact(chunk.error, secrets);
      throw new UpstreamFailure("protocol", `error event: ${said}`, true, false, new ApiError("upstream_error", `The upstream inference server failed: ${said}`));
    }
    if (chunk.text !== "") this.textChunks += 1;
    this.finishReason = chunk.finishReason ?? this.finishReason;
    this.matchedStop = chunk.matchedStop ?? this.matchedStop;
    this.usage = chunk.usage ?? this.usage;
    return chunk.text;
  }
}

export interface Counts {
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedTokens: number;
}

export interface UpstreamGenerationParts {
  readonly server: UpstreamServer;
  readonly call: UpstreamCall;
  /** Events already read (the first text, or a whole non-streamed answer). */
  readonly ready: GenerationEvent[];
  /** The stream's remaining data payloads; undefined once the answer is complete. */
  readonly rest: AsyncIterator<string> | undefined;
  readonly state: StreamState;
  /** Prompt tokens as estimated before sending, for when the upstream reports none. */
  readonly estimatedPromptTokens: number;
  readonly stop: readonly string[];
  readonly idleMs: number;
  /** The client's signal: when it aborted, the iteration ends without an error. */
  readonly clientSignal: AbortSignal;
  /** Releases the body; called once from close(). */
  readonly destroy: () => void;
}

/** The finish event for a complete answer: exact upstream counts where given. */
export function finishEvent(state: StreamState, estimatedPromptTokens: number, stop: readonly string[]): GenerationEvent {
  const counts = countsOf(state, estimatedPromptTokens);
  return {
    type: "finish",
    finishReason: state.finishReason ?? "stop",
    stopReason: state.matchedStop !== null && stop.includes(state.matchedStop) ? state.matchedStop : null,
    ...counts,
  };
}

function countsOf(state: StreamState, estimatedPromptTokens: number): Counts {
  return state.usage ?? { promptTokens: estimatedPromptTokens, completionTokens: state.textChunks, cachedTokens: 0 };
}

export class UpstreamGeneration implements Generation {
  readonly #parts: UpstreamGenerationParts;
  #closed = false;

  constructor(parts: UpstreamGenerationParts) {
    this.#parts = parts;
  }

  usage(): Counts {
    return countsOf(this.#parts.state, this.#parts.estimatedPromptTokens);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<GenerationEvent, void, undefined> {
    const { ready, rest, state, server, call } = this.#parts;
    let complete = false;
    while (ready.length > 0) {
      const event = ready.shift() as GenerationEvent;
      complete = event.type === "finish";
      yield event;
    }
    if (rest === undefined || complete) return;
    try {
      while (true) {
        call.phase(SILENT_MID_STREAM, this.#parts.idleMs);
        const next = await rest.next();
        if (next.done === true) {
          if (state.finishReason === null && !state.done) throw transportFailure("reset", "the stream ended before the answer was complete");
          break;
        }
        const text = state.read(next.value, server.secrets);
        if (text !== "") yield { type: "delta", text };
        if (state.done) break;
      }
    } catch (error) {
      if (this.#parts.clientSignal.aborted || this.#closed) return;
      const failure = classifyError(error, call.timedOut);
      server.failed(failure.message, failure.unhealthy);
      throw failure.apiError;
    }
    yield finishEvent(state, this.#parts.estimatedPromptTokens, this.#parts.stop);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const { call, server, state } = this.#parts;
    server.end();
    if (state.done || state.finishReason !== null) {
      // Complete: read the little that is left (the end of the chunked body) so the
      // connection goes back to the pool for reuse, but never wait long for it.
      void this.#drain().finally(() => call.dispose());
      return;
    }
    // Unfinished: the upstream request is cancelled now, not left to generate for nobody.
    call.abort("closed by Parley");
    this.#parts.destroy();
    call.dispose();
  }

  async #drain(): Promise<void> {
    const rest = this.#parts.rest;
    if (rest === undefined) return;
    const deadline = setTimeout(() => this.#parts.destroy(), DRAIN_MS);
    try {
      while ((await rest.next()).done !== true);
    } catch {
      // Destroyed at the deadline, or the upstream broke after its answer: nothing is lost.
    } finally {
      clearTimeout(deadline);
    }
  }
}

const SILENT_MID_STREAM: PhaseDeadline = (ms) => `no data for ${ms} ms mid-stream`;

/** How long a finished answer's trailing bytes are waited for before the connection is dropped. */
const DRAIN_MS = 1000;

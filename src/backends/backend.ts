/**
 * The interface every model is served through (DESIGN §2, stages 5–7). A backend knows
 * nothing of HTTP: it takes a validated request and yields text deltas, then one finish
 * event with exact token counts.
 */
import type { ChatRequest } from "../protocol/chat-request.js";
import type { FinishReason } from "../protocol/chat-response.js";

export type BackendState = "loading" | "ready" | "failed" | "disposed";

/**
 * What a backend reads of a validated request to generate; `model` and `includeUsage` are
 * the server's business. `stream` matters to a backend that relays another server's answer.
 */
export type GenerationRequest = Pick<
  ChatRequest,
  "messages" | "temperature" | "topP" | "maxTokens" | "presencePenalty" | "frequencyPenalty" | "stop" | "seed" | "stream"
>;

/** A request rendered and tokenized by {@link Backend.prepare}; opaque beyond its count. */
export interface PreparedPrompt {
  /** Tokens of the rendered prompt (chat template applied), exactly as evaluated. */
  readonly promptTokens: number;
}

export type GenerationEvent =
  | { readonly type: "delta"; readonly text: string }
  | {
      readonly type: "finish";
      readonly finishReason: FinishReason;
      /** The client's stop string that ended generation, or null. */
      readonly stopReason: string | null;
      readonly promptTokens: number;
      readonly completionTokens: number;
      readonly cachedTokens: number;
    };

/**
 * A running generation. Iterate it for the events; `close()` ends it early and frees the
 * backend's capacity (idempotent; always call it, e.g. in a `finally`, even when the
 * events were never read).
 */
export interface Generation extends AsyncIterable<GenerationEvent> {
  close(): Promise<void>;
  /** Tokens so far: what an abandoned or failed generation consumed, for the ledger. */
  usage(): { readonly promptTokens: number; readonly completionTokens: number; readonly cachedTokens: number };
}

/**
 * A place reserved in a backend's queue (stage 5). Exactly one of `start` or `release`
 * ends it; `release` is idempotent and safe to call in a `finally`.
 */
export interface Admission {
  /**
   * Waits, first in first out, until the backend can run the request, then generates.
   * Rejects with an `ApiError` when `signal` aborts while waiting. Iteration ends after
   * the finish event, or early (without one) when `signal` aborts.
   */
  start(prepared: PreparedPrompt, signal: AbortSignal): Promise<Generation>;
  release(): void;
}

export interface ModelInfo {
  /** The name clients send as `model`, and the first of the names a backend serves. */
  readonly id: string;
  readonly created: number;
  readonly ownedBy: string;
}

export interface Backend {
  readonly info: ModelInfo;
  state(): BackendState;
  /** Requests generating now, and requests waiting in the queue. */
  activity(): { readonly running: number; readonly waiting: number };
  /**
   * Stage 5: reserve a place, or throw an `ApiError` (503 `model_loading`,
   * `model_unavailable` or `server_overloaded`, each with `Retry-After`). `owner` (the
   * API key's id) makes waiting fair across keys; requests without one share "".
   */
  admit(owner?: string): Admission;
  /**
   * Stage 6: render the chat template, count tokens, check the context window (400).
   * `requestId` is the request's `x-request-id`, for a backend that passes it on.
   */
  prepare(request: GenerationRequest, requestId?: string): Promise<PreparedPrompt>;
  /** Frees the model; idempotent. */
  dispose(): Promise<void>;
}

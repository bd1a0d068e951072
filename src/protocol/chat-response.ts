/**
 * Builders for the response body and the stream chunks, in exactly the seed's shape
 * (DESIGN §3). Pure: the caller supplies ids, timestamps and counts.
 */

export type FinishReason = "stop" | "length";

export interface Usage {
  prompt_tokens: number;
  total_tokens: number;
  completion_tokens: number;
  prompt_tokens_details?: { cached_tokens: number };
}

export interface TokenCounts {
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Prompt tokens whose KV cache was reused; reported when defined. */
  readonly cachedTokens?: number;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: [
    {
      index: 0;
      message: { role: "assistant"; content: string; tool_calls: [] };
      logprobs: null;
      finish_reason: FinishReason;
      stop_reason: string | null;
    },
  ];
  usage: Usage;
}

export interface ChunkChoice {
  index: 0;
  delta: { role?: "assistant"; content?: string };
  logprobs: null;
  finish_reason: FinishReason | null;
  stop_reason?: string | null;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: ChunkChoice[];
  usage?: Usage;
}

/** What every response and chunk of one completion shares. */
export interface CompletionIdentity {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

export function buildUsage(counts: TokenCounts): Usage {
  const usage: Usage = {
    prompt_tokens: counts.promptTokens,
    total_tokens: counts.promptTokens + counts.completionTokens,
    completion_tokens: counts.completionTokens,
  };
  if (counts.cachedTokens !== undefined) usage.prompt_tokens_details = { cached_tokens: counts.cachedTokens };
  return usage;
}

export function buildCompletion(
  identity: CompletionIdentity,
  content: string,
  finishReason: FinishReason,
  stopReason: string | null,
  counts: TokenCounts,
): ChatCompletion {
  return {
    id: identity.id,
    object: "chat.completion",
    created: identity.created,
    model: identity.model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content, tool_calls: [] },
        logprobs: null,
        finish_reason: finishReason,
        stop_reason: stopReason,
      },
    ],
    usage: buildUsage(counts),
  };
}

function chunk(identity: CompletionIdentity, choices: ChunkChoice[]): ChatCompletionChunk {
  return { id: identity.id, object: "chat.completion.chunk", created: identity.created, model: identity.model, choices };
}

/** The first chunk: the assistant role, with no text yet. */
export function buildRoleChunk(identity: CompletionIdentity): ChatCompletionChunk {
  return chunk(identity, [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]);
}

export function buildContentChunk(identity: CompletionIdentity, content: string): ChatCompletionChunk {
  return chunk(identity, [{ index: 0, delta: { content }, logprobs: null, finish_reason: null }]);
}

/** The one chunk that carries the non-null `finish_reason` (and the seed's `stop_reason`). */
export function buildFinishChunk(identity: CompletionIdentity, finishReason: FinishReason, stopReason: string | null): ChatCompletionChunk {
  return chunk(identity, [{ index: 0, delta: {}, logprobs: null, finish_reason: finishReason, stop_reason: stopReason }]);
}

/** With `stream_options.include_usage`: the last chunk before `[DONE]`, with no choices. */
export function buildUsageChunk(identity: CompletionIdentity, counts: TokenCounts): ChatCompletionChunk {
  return { ...chunk(identity, []), usage: buildUsage(counts) };
}

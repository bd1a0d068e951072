/**
 * What Parley reads of an upstream's answer, whichever server wrote it: text, finish reason,
 * the client's stop string, and token counts. Everything else — the upstream's id, model,
 * `system_fingerprint`, `timings`, logprobs, roles — is dropped, because the client gets
 * Parley's own response built from these readings (DESIGN §3).
 *
 * Quirks absorbed here, by server:
 * - vLLM: `stop_reason` (the stop string or token id) beside `finish_reason`; a usage chunk
 *   with `choices: []`; `prompt_tokens_details.cached_tokens` when enabled.
 * - SGLang: `matched_stop` (string or token id) instead of `stop_reason`.
 * - TGI: finish reasons `eos_token` and `stop_sequence`; usage on the last chunk.
 * - llama-server: a first delta `{"role":"assistant","content":null}`; `timings` (cached
 *   tokens, and the counts when no usage chunk was asked for); errors as an in-stream
 *   `{"error": …}` event, e.g. its Jinja output parser's 500 mid-stream.
 * - Ollama: `finish_reason: ""` on chunks that do not finish.
 */
import type { FinishReason } from "../../protocol/chat-response.js";
import { UpstreamProtocolError } from "./sse-reader.js";

export interface UpstreamUsage {
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedTokens: number;
}

/** One streamed chunk, read. */
export interface ChunkReading {
  readonly text: string;
  readonly finishReason: FinishReason | null;
  /** The stop string the upstream says ended generation, if it says so as a string. */
  readonly matchedStop: string | null;
  readonly usage: UpstreamUsage | null;
  /** An error the upstream reported inside its stream, as a message. */
  readonly error: string | null;
}

export interface CompletionReading {
  readonly text: string;
  readonly finishReason: FinishReason;
  readonly matchedStop: string | null;
  readonly usage: UpstreamUsage | null;
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);

const count = (value: unknown): number | null => (typeof value === "number" && Number.isInteger(value) && value >= 0 ? value : null);

/** Finish reasons of every server, in Parley's two. Null, "" and unknown-but-absent mean "not finished". */
export function mapFinishReason(raw: unknown): FinishReason | null {
  if (typeof raw !== "string" || raw === "") return null;
  if (raw === "length" || raw === "max_tokens" || raw === "model_length") return "length";
  // stop, eos_token, stop_sequence, eos, end_turn, tool_calls, content_filter, abort…: the model stopped.
  return "stop";
}

/**
 * `usage` as OpenAI writes it, with llama-server's `timings.cache_n` as the cached count when
 * that is all there is; without `usage`, llama-server's `timings` alone (prompt tokens are
 * `prompt_n` evaluated plus `cache_n` reused, completion tokens `predicted_n`).
 */
export function readUsage(usage: unknown, timings: unknown): UpstreamUsage | null {
  const timed = isObject(timings) ? timings : {};
  if (!isObject(usage)) {
    const evaluated = count(timed.prompt_n);
    const predicted = count(timed.predicted_n);
    if (evaluated === null || predicted === null) return null;
    const reused = count(timed.cache_n) ?? 0;
    return { promptTokens: evaluated + reused, completionTokens: predicted, cachedTokens: reused };
  }
  const promptTokens = count(usage.prompt_tokens);
  const completionTokens = count(usage.completion_tokens);
  if (promptTokens === null || completionTokens === null) return null;
  const details = isObject(usage.prompt_tokens_details) ? usage.prompt_tokens_details : {};
  const cached = count(details.cached_tokens) ?? count(timed.cache_n) ?? 0;
  return { promptTokens, completionTokens, cachedTokens: Math.min(cached, promptTokens) };
}

function matchedStop(choice: Json): string | null {
  const value = choice.stop_reason ?? choice.matched_stop;
  return typeof value === "string" ? value : null;
}

/** The message of an error body in any upstream's shape (OpenAI, vLLM flat, TGI, plain text). */
export function upstreamErrorMessage(body: unknown): string | null {
  const text = (value: unknown): string | null => (typeof value === "string" && value.trim() !== "" ? value.trim() : null);
  if (typeof body === "string") return text(body);
  if (!isObject(body)) return null;
  const error = body.error;
  return (
    text(body.message) ?? // vLLM: {"object":"error","message":…}
    text(error) ?? // TGI: {"error":"…","error_type":"…"}
    (isObject(error) ? text(error.message) : null) ?? // OpenAI, llama-server, Ollama
    text(body.detail) // FastAPI validation
  );
}

function parseJson(data: string, what: string): Json {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw new UpstreamProtocolError(`the upstream sent ${what} that is not JSON`);
  }
  if (!isObject(parsed)) throw new UpstreamProtocolError(`the upstream sent ${what} that is not a JSON object`);
  return parsed;
}

/** Reads one SSE `data` payload (not `[DONE]`) of a streamed chat completion. */
export function readChunk(data: string): ChunkReading {
  const chunk = parseJson(data, "a stream event");
  // An error event: nested ({"error": {…}}, most servers) or flat ({"object": "error", …}, vLLM's error body).
  if ((chunk.error !== undefined || chunk.object === "error") && chunk.choices === undefined) {
    return { text: "", finishReason: null, matchedStop: null, usage: null, error: upstreamErrorMessage(chunk) ?? "unknown upstream error" };
  }
  const choices = chunk.choices;
  if (choices !== undefined && choices !== null && !Array.isArray(choices)) throw new UpstreamProtocolError("the upstream sent a chunk whose choices is not a list");
  const choice = Array.isArray(choices) && isObject(choices[0]) ? choices[0] : {};
  const delta = isObject(choice.delta) ? choice.delta : {};
  return {
    text: typeof delta.content === "string" ? delta.content : "",
    finishReason: mapFinishReason(choice.finish_reason),
    matchedStop: matchedStop(choice),
    usage: readUsage(chunk.usage, chunk.timings),
    error: null,
  };
}

/** Reads a non-streamed chat completion body. */
export function readCompletion(text: string): CompletionReading {
  const body = parseJson(text, "a response");
  const choices = body.choices;
  const choice = Array.isArray(choices) && isObject(choices[0]) ? choices[0] : null;
  if (choice === null) throw new UpstreamProtocolError("the upstream's response has no choices");
  const message = isObject(choice.message) ? choice.message : {};
  return {
    text: typeof message.content === "string" ? message.content : "",
    // A complete non-streamed answer has finished, even where the server leaves the reason empty.
    finishReason: mapFinishReason(choice.finish_reason) ?? "stop",
    matchedStop: matchedStop(choice),
    usage: readUsage(body.usage, body.timings),
  };
}

/**
 * Assertions on the wire contract (DESIGN §3) shared by the integration tests: the error
 * envelope, the completion and chunk shapes, and "the server still serves".
 */
import assert from "node:assert/strict";
import { postChat, type RunningParley } from "./parley.js";

/** `cmpl-` + 32 lowercase hex digits, as in the seed's response. */
export const COMPLETION_ID = /^cmpl-[0-9a-f]{32}$/;

/** A UTF-16 code unit that is half of a surrogate pair without its other half. */
export const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export interface ErrorEnvelope {
  error: { message: string; type: string; param: string | null; code: string };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number };
}

export interface Completion {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: { role: string; content: string; tool_calls: unknown[] };
    logprobs: null;
    finish_reason: "stop" | "length";
    stop_reason: string | null;
  }>;
  usage: Usage;
}

export interface Chunk {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: { role?: string; content?: string };
    logprobs: null;
    finish_reason: "stop" | "length" | null;
    stop_reason?: string | null;
  }>;
  usage?: Usage;
}

/** The error `type` OpenAI uses for each status Parley answers with. */
const TYPE_FOR_STATUS: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  404: "not_found_error",
  413: "invalid_request_error",
  415: "invalid_request_error",
  429: "rate_limit_error",
  502: "server_error",
  503: "overloaded_error",
  504: "server_error",
};

/**
 * Asserts an error response: the status, a JSON body that is exactly the envelope
 * `{error: {message, type, param, code}}`, the code and param, and an `x-request-id`.
 */
export async function expectError(
  response: Response,
  expected: { status: number; code: string; param?: string | null; type?: string },
): Promise<ErrorEnvelope> {
  const text = await response.text();
  assert.equal(response.status, expected.status, `status of ${text}`);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/, "an error is a JSON body");
  assert.ok((response.headers.get("x-request-id") ?? "").length > 0, "x-request-id on an error response");
  const body = JSON.parse(text) as ErrorEnvelope;
  assert.deepEqual(Object.keys(body), ["error"], text);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"], text);
  assert.equal(typeof body.error.message, "string");
  assert.ok(body.error.message.length > 0, "a message that says what went wrong");
  assert.equal(body.error.code, expected.code, text);
  assert.equal(body.error.type, expected.type ?? TYPE_FOR_STATUS[expected.status], text);
  if (expected.param !== undefined) assert.equal(body.error.param, expected.param, text);
  return body;
}

/** The smallest request that the test models answer quickly. */
export function chatBody(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: "test-model", messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 4, ...overrides };
}

/** Asserts the full non-streaming response shape of the seed, and usage arithmetic. */
export function assertCompletionShape(body: Completion, model: string): void {
  assert.deepEqual(Object.keys(body).sort(), ["choices", "created", "id", "model", "object", "usage"]);
  assert.match(body.id, COMPLETION_ID);
  assert.equal(body.object, "chat.completion");
  assert.ok(Number.isInteger(body.created), "created is integer seconds");
  const now = Date.now() / 1000;
  assert.ok(body.created > now - 3600 && body.created < now + 3600, `created ${body.created} is seconds since the epoch`);
  assert.equal(body.model, model);
  assert.equal(body.choices.length, 1);
  const [choice] = body.choices;
  assert.ok(choice !== undefined);
  assert.deepEqual(Object.keys(choice).sort(), ["finish_reason", "index", "logprobs", "message", "stop_reason"]);
  assert.equal(choice.index, 0);
  assert.deepEqual(Object.keys(choice.message).sort(), ["content", "role", "tool_calls"]);
  assert.equal(choice.message.role, "assistant");
  assert.equal(typeof choice.message.content, "string");
  assert.deepEqual(choice.message.tool_calls, []);
  assert.equal(choice.logprobs, null);
  assert.ok(choice.finish_reason === "stop" || choice.finish_reason === "length", `finish_reason ${choice.finish_reason}`);
  assert.ok(choice.stop_reason === null || typeof choice.stop_reason === "string");
  if (choice.finish_reason === "length") assert.equal(choice.stop_reason, null);
  assertUsage(body.usage);
}

export function assertUsage(usage: Usage | undefined): asserts usage is Usage {
  assert.ok(usage !== undefined, "usage is present");
  for (const field of ["prompt_tokens", "completion_tokens", "total_tokens"] as const) {
    assert.ok(Number.isInteger(usage[field]) && usage[field] >= 0, `${field} is a count: ${usage[field]}`);
  }
  assert.ok(usage.prompt_tokens > 0, "a rendered prompt has tokens");
  // The seed's three counts, and OpenAI's optional cached-prefix detail (DESIGN §5).
  for (const key of Object.keys(usage)) {
    assert.ok(["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"].includes(key), `unexpected usage.${key}`);
  }
  if (usage.prompt_tokens_details !== undefined) {
    const cached = usage.prompt_tokens_details.cached_tokens;
    assert.ok(Number.isInteger(cached) && cached >= 0 && cached <= usage.prompt_tokens, `cached_tokens ${cached}`);
  }
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, "total = prompt + completion");
}

/** Posts a normal request and asserts it completes: the server survived what came before. */
export async function expectServes(parley: RunningParley, init: { apiKey?: string } = {}): Promise<Completion> {
  const response = await postChat(parley, chatBody(), init);
  const text = await response.text();
  assert.equal(response.status, 200, `the server still serves: ${text}`);
  const body = JSON.parse(text) as Completion;
  assert.equal(body.object, "chat.completion");
  return body;
}

/** Splits a stream's events into its chunks and asserts it ended with `[DONE]`. */
export function chunksOf(events: readonly unknown[]): Chunk[] {
  assert.ok(events.length >= 2, "a stream has chunks and [DONE]");
  assert.equal(events.at(-1), "[DONE]", "the last event is [DONE]");
  const chunks = events.slice(0, -1);
  for (const chunk of chunks) assert.notEqual(chunk, "[DONE]", "[DONE] only once, at the end");
  return chunks as Chunk[];
}

/** The text of a stream: every delta's content, in order. */
export function streamedText(chunks: readonly Chunk[]): string {
  return chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("");
}

/** Non-empty content deltas, each as sent. */
export function contentDeltas(chunks: readonly Chunk[]): string[] {
  return chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").filter((text) => text.length > 0);
}

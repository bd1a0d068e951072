import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { mapFinishReason, readChunk, readCompletion, readUsage, upstreamErrorMessage } from "../../src/backends/upstream/normalise.js";
import { readSseData, UpstreamProtocolError } from "../../src/backends/upstream/sse-reader.js";
import { UPSTREAM_FIXTURES_DIR } from "../helpers/fake-upstream.js";

const chunk = (body: unknown) => readChunk(JSON.stringify(body));

test("vLLM: text, stop_reason as the stop string, and the usage chunk with choices: []", () => {
  assert.deepEqual(chunk({ object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: "Hel" }, logprobs: null, finish_reason: null }] }), {
    text: "Hel",
    finishReason: null,
    matchedStop: null,
    usage: null,
    error: null,
  });
  const last = chunk({ choices: [{ index: 0, delta: { content: "" }, finish_reason: "stop", stop_reason: "###" }] });
  assert.equal(last.finishReason, "stop");
  assert.equal(last.matchedStop, "###");
  // A stop token id is not a stop string.
  assert.equal(chunk({ choices: [{ delta: {}, finish_reason: "stop", stop_reason: 128009 }] }).matchedStop, null);
  const usage = chunk({ choices: [], usage: { prompt_tokens: 30, completion_tokens: 8, total_tokens: 38, prompt_tokens_details: { cached_tokens: 16 } } });
  assert.deepEqual(usage, { text: "", finishReason: null, matchedStop: null, usage: { promptTokens: 30, completionTokens: 8, cachedTokens: 16 }, error: null });
  // Prefix caching off: no details, or details null.
  assert.deepEqual(chunk({ choices: [], usage: { prompt_tokens: 30, completion_tokens: 8, prompt_tokens_details: null } }).usage, { promptTokens: 30, completionTokens: 8, cachedTokens: 0 });
  assert.equal(chunk({ choices: [{ delta: { content: "x" }, finish_reason: "length", stop_reason: null }] }).finishReason, "length");
});

test("SGLang: matched_stop as a string or a token id, and an empty finish_reason", () => {
  const stopped = chunk({ choices: [{ delta: { role: null, content: null }, finish_reason: "stop", matched_stop: "</answer>" }], usage: null });
  assert.equal(stopped.finishReason, "stop");
  assert.equal(stopped.matchedStop, "</answer>");
  assert.equal(stopped.text, "");
  assert.equal(chunk({ choices: [{ delta: { content: null }, finish_reason: "stop", matched_stop: 151645 }] }).matchedStop, null);
  const going = chunk({ choices: [{ delta: { content: "?" }, finish_reason: "", matched_stop: null }], usage: null });
  assert.equal(going.finishReason, null);
  assert.equal(going.text, "?");
});

test("TGI: eos_token and stop_sequence finish, usage on the last chunk beside its choice", () => {
  assert.equal(chunk({ choices: [{ delta: { role: "assistant", content: "" }, finish_reason: "eos_token" }] }).finishReason, "stop");
  const last = chunk({
    choices: [{ index: 0, delta: { role: "assistant", content: "!" }, logprobs: null, finish_reason: "stop_sequence" }],
    usage: { prompt_tokens: 42, completion_tokens: 7, total_tokens: 49 },
  });
  assert.equal(last.text, "!");
  assert.equal(last.finishReason, "stop");
  assert.deepEqual(last.usage, { promptTokens: 42, completionTokens: 7, cachedTokens: 0 });
  assert.equal(chunk({ choices: [{ delta: { content: "" }, finish_reason: "length" }] }).finishReason, "length");
});

test("llama-server: a first delta with content null, and cached tokens only in timings.cache_n", () => {
  assert.deepEqual(chunk({ choices: [{ finish_reason: null, index: 0, delta: { role: "assistant", content: null } }] }), {
    text: "",
    finishReason: null,
    matchedStop: null,
    usage: null,
    error: null,
  });
  const usage = chunk({ choices: [], usage: { completion_tokens: 8, prompt_tokens: 30, total_tokens: 38 }, timings: { cache_n: 12, prompt_n: 18 } });
  assert.deepEqual(usage.usage, { promptTokens: 30, completionTokens: 8, cachedTokens: 12 });
  // Where the server does report cached tokens, that count wins over timings.
  const both = chunk({ choices: [], usage: { completion_tokens: 8, prompt_tokens: 30, prompt_tokens_details: { cached_tokens: 4 } }, timings: { cache_n: 12 } });
  assert.equal(both.usage?.cachedTokens, 4);
});

test("llama-server without a usage chunk: the counts come from timings (prompt_n evaluated + cache_n reused)", () => {
  const last = chunk({ choices: [{ finish_reason: "stop", index: 0, delta: {} }], timings: { cache_n: 12, prompt_n: 18, predicted_n: 9, prompt_ms: 41.2 } });
  assert.equal(last.finishReason, "stop");
  assert.deepEqual(last.usage, { promptTokens: 30, completionTokens: 9, cachedTokens: 12 });
  assert.deepEqual(readUsage(undefined, { prompt_n: 27, predicted_n: 9 }), { promptTokens: 27, completionTokens: 9, cachedTokens: 0 });
  // Timings without both counts are no usage.
  assert.equal(readUsage(undefined, { cache_n: 3 }), null);
  assert.equal(readUsage(undefined, { prompt_n: 3 }), null);
  assert.equal(readUsage(undefined, { prompt_n: 3, predicted_n: -1 }), null);
  assert.equal(readUsage(undefined, undefined), null);
});

test("Ollama: finish_reason \"\" means not finished", () => {
  const going = chunk({ choices: [{ index: 0, delta: { role: "assistant", content: "Hi" }, finish_reason: "" }] });
  assert.equal(going.finishReason, null);
  assert.equal(going.text, "Hi");
  assert.equal(chunk({ choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: "stop" }] }).finishReason, "stop");
});

test("finish reasons of every server map to stop or length", () => {
  for (const raw of ["length", "max_tokens", "model_length"]) assert.equal(mapFinishReason(raw), "length", raw);
  for (const raw of ["stop", "eos_token", "stop_sequence", "eos", "end_turn", "tool_calls", "content_filter", "abort"]) assert.equal(mapFinishReason(raw), "stop", raw);
  for (const raw of [null, undefined, "", 0, false, {}]) assert.equal(mapFinishReason(raw), null, String(raw));
});

test("usage needs both counts as non-negative integers; cached tokens never exceed the prompt", () => {
  assert.deepEqual(readUsage({ prompt_tokens: 0, completion_tokens: 0 }, undefined), { promptTokens: 0, completionTokens: 0, cachedTokens: 0 });
  assert.equal(readUsage({ prompt_tokens: 10 }, undefined), null);
  assert.equal(readUsage({ completion_tokens: 10 }, undefined), null);
  assert.equal(readUsage({ prompt_tokens: -1, completion_tokens: 2 }, undefined), null);
  assert.equal(readUsage({ prompt_tokens: 1.5, completion_tokens: 2 }, undefined), null);
  assert.equal(readUsage({ prompt_tokens: "10", completion_tokens: 2 }, undefined), null);
  assert.equal(readUsage(null, { cache_n: 3 }), null);
  assert.equal(readUsage([10, 2], undefined), null);
  assert.equal(readUsage({ prompt_tokens: 10, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 50 } }, undefined)?.cachedTokens, 10);
  assert.equal(readUsage({ prompt_tokens: 10, completion_tokens: 2 }, { cache_n: 50 })?.cachedTokens, 10);
  // An unreadable cached count is zero, not a failure.
  assert.equal(readUsage({ prompt_tokens: 10, completion_tokens: 2, prompt_tokens_details: { cached_tokens: -4 } }, undefined)?.cachedTokens, 0);
});

test("an error inside the stream is read as an error, in each server's shape", () => {
  assert.equal(chunk({ error: { object: "error", message: "vLLM broke", type: "InternalServerError", code: 500 } }).error, "vLLM broke");
  assert.equal(chunk({ error: "TGI broke", error_type: "generation" }).error, "TGI broke");
  assert.equal(chunk({ error: { code: 500, message: "llama broke", type: "server_error" } }).error, "llama broke");
  assert.equal(chunk({ error: { type: "mystery" } }).error, "unknown upstream error");
  // A normal chunk is not an error.
  assert.equal(chunk({ choices: [{ delta: { content: "x" } }] }).error, null);
});

test("a stream event that is not a JSON object is a protocol error", () => {
  for (const data of ["not json", "{\"choices\": [", "", "[1, 2]", "\"text\"", "null", "42"]) {
    assert.throws(() => readChunk(data), UpstreamProtocolError, JSON.stringify(data));
  }
});

test("a chunk whose choices is not a list is a protocol error; absent or null choices read as empty", () => {
  for (const choices of [{}, "x", 1, true]) assert.throws(() => chunk({ choices }), UpstreamProtocolError, JSON.stringify(choices));
  const empty = { text: "", finishReason: null, matchedStop: null, usage: null, error: null };
  assert.deepEqual(chunk({}), empty);
  assert.deepEqual(chunk({ choices: null }), empty);
  assert.deepEqual(chunk({ choices: [null] }), empty);
  assert.deepEqual(chunk({ choices: [{ delta: null }] }), empty);
  assert.deepEqual(chunk({ choices: [{ delta: { content: 7 } }] }), empty);
});

test("a non-streamed completion, in each server's shape", () => {
  const vllm = readCompletion(
    JSON.stringify({
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: "Hello!" }, finish_reason: "stop", stop_reason: "\n\n" }],
      usage: { prompt_tokens: 30, completion_tokens: 8, prompt_tokens_details: { cached_tokens: 16 } },
    }),
  );
  assert.deepEqual(vllm, { text: "Hello!", finishReason: "stop", matchedStop: "\n\n", usage: { promptTokens: 30, completionTokens: 8, cachedTokens: 16 } });
  assert.equal(readCompletion(JSON.stringify({ choices: [{ message: { content: "a" }, finish_reason: "stop", matched_stop: "END" }] })).matchedStop, "END");
  assert.equal(readCompletion(JSON.stringify({ choices: [{ message: { content: "a" }, finish_reason: "stop_sequence" }] })).finishReason, "stop");
  assert.equal(readCompletion(JSON.stringify({ choices: [{ message: { content: "a" }, finish_reason: "length" }] })).finishReason, "length");
  assert.equal(readCompletion(JSON.stringify({ choices: [{ message: { content: "a" } }], usage: { prompt_tokens: 3, completion_tokens: 1 }, timings: { cache_n: 2 } })).usage?.cachedTokens, 2);
});

test("a complete non-streamed answer has finished even when its finish_reason is empty or missing", () => {
  for (const finish of ["", null, undefined]) {
    assert.equal(readCompletion(JSON.stringify({ choices: [{ message: { content: "a" }, finish_reason: finish }] })).finishReason, "stop", String(finish));
  }
  // Content null (e.g. only tool calls) reads as no text.
  assert.equal(readCompletion(JSON.stringify({ choices: [{ message: { role: "assistant", content: null }, finish_reason: "stop" }] })).text, "");
});

test("a non-streamed response that is not JSON, not an object, or without a choice is a protocol error", () => {
  for (const body of ["<html>502 Bad Gateway</html>", "", "[]", "null", "{}", '{"choices": []}', '{"choices": {}}', '{"choices": [null]}', '{"choices": "x"}']) {
    assert.throws(() => readCompletion(body), UpstreamProtocolError, body);
  }
});

test("error bodies of each shape give their message", () => {
  // OpenAI, and vLLM's newer nested form.
  assert.equal(upstreamErrorMessage({ error: { message: "bad model", type: "invalid_request_error", param: null, code: null } }), "bad model");
  // vLLM's flat form.
  assert.equal(upstreamErrorMessage({ object: "error", message: "too long", type: "BadRequestError", param: null, code: 400 }), "too long");
  // TGI.
  assert.equal(upstreamErrorMessage({ error: "Input validation error", error_type: "validation" }), "Input validation error");
  // llama-server and Ollama.
  assert.equal(upstreamErrorMessage({ error: { code: 400, message: "exceeds the available context size", type: "exceed_context_size_error" } }), "exceeds the available context size");
  assert.equal(upstreamErrorMessage({ error: { message: "model \"x\" not found", type: "not_found_error" } }), "model \"x\" not found");
  // FastAPI.
  assert.equal(upstreamErrorMessage({ detail: "Not Found" }), "Not Found");
  // Plain text, trimmed.
  assert.equal(upstreamErrorMessage("  Internal Server Error\n"), "Internal Server Error");
});

test("error bodies with no message give null", () => {
  for (const body of [null, undefined, 42, "", "   ", [], ["x"], {}, { error: {} }, { error: { message: 5 } }, { error: null }, { detail: [{ loc: ["body"], msg: "field required" }] }]) {
    assert.equal(upstreamErrorMessage(body), null, JSON.stringify(body));
  }
});

interface ManifestEntry {
  readonly file: string;
  readonly kind: "stream" | "json" | "error";
  readonly status: number;
  readonly expect: {
    readonly content?: string;
    readonly finishReason?: string;
    readonly promptTokens?: number | null;
    readonly completionTokens?: number | null;
    readonly cachedTokens?: number | null;
    readonly stopReason?: string | number | null;
    readonly upstreamMessage?: string;
  };
}

const manifest = JSON.parse(readFileSync(path.join(UPSTREAM_FIXTURES_DIR, "manifest.json"), "utf8")) as ManifestEntry[];

/**
 * What Parley should read of a recorded answer, from its manifest entry. The manifest gives
 * the counts of the `usage` object only; where it has none, usage is left out of the
 * comparison (llama-server's `timings` still give counts then, tested above).
 */
function expected(entry: ManifestEntry): Record<string, unknown> {
  const { expect } = entry;
  const reading: Record<string, unknown> = {
    text: expect.content,
    finishReason: expect.finishReason,
    // Only a stop string is passed on; a stop token id is not.
    matchedStop: typeof expect.stopReason === "string" ? expect.stopReason : null,
  };
  if (typeof expect.promptTokens === "number") {
    reading.usage = { promptTokens: expect.promptTokens, completionTokens: expect.completionTokens, cachedTokens: expect.cachedTokens ?? 0 };
  }
  return reading;
}

/** `reading` with only the fields that `expected` compares. */
function comparable(reading: { text: string; finishReason: string | null; matchedStop: string | null; usage: unknown }, entry: ManifestEntry): Record<string, unknown> {
  const { text, finishReason, matchedStop, usage } = reading;
  return typeof entry.expect.promptTokens === "number" ? { text, finishReason, matchedStop, usage } : { text, finishReason, matchedStop };
}

test("recorded streams of every server read to their expected text, finish and usage, in 7-byte pieces", async () => {
  const streams = manifest.filter((entry) => entry.kind === "stream");
  assert.ok(streams.length >= 5);
  for (const entry of streams) {
    const bytes = readFileSync(path.join(UPSTREAM_FIXTURES_DIR, entry.file));
    async function* body(): AsyncGenerator<Uint8Array> {
      for (let start = 0; start < bytes.length; start += 7) yield bytes.subarray(start, start + 7);
    }
    let text = "";
    let finishReason: string | null = null;
    let matchedStop: string | null = null;
    let usage: unknown = null;
    for await (const data of readSseData(body())) {
      // Older TGI ends the stream without [DONE]; the others send it.
      if (data === "[DONE]") break;
      const reading = readChunk(data);
      assert.equal(reading.error, null, entry.file);
      text += reading.text;
      finishReason = reading.finishReason ?? finishReason;
      matchedStop = reading.matchedStop ?? matchedStop;
      usage = reading.usage ?? usage;
    }
    assert.deepEqual(comparable({ text, finishReason, matchedStop, usage }, entry), expected(entry), entry.file);
  }
});

test("recorded non-streamed answers of every server read to their expected text, finish and usage", () => {
  const answers = manifest.filter((entry) => entry.kind === "json");
  assert.ok(answers.length >= 5);
  for (const entry of answers) {
    const reading = readCompletion(readFileSync(path.join(UPSTREAM_FIXTURES_DIR, entry.file), "utf8"));
    assert.deepEqual(comparable(reading, entry), expected(entry), entry.file);
  }
});

test("recorded error bodies of every server give their message", () => {
  const errors = manifest.filter((entry) => entry.kind === "error");
  assert.ok(errors.length >= 5);
  for (const entry of errors) {
    const body: unknown = JSON.parse(readFileSync(path.join(UPSTREAM_FIXTURES_DIR, entry.file), "utf8"));
    assert.equal(upstreamErrorMessage(body), entry.expect.upstreamMessage, entry.file);
  }
});

test("a flat error object inside a stream (vLLM's error body shape) is an error event, not an empty chunk", () => {
  const reading = readChunk(JSON.stringify({ object: "error", message: "engine died", type: "InternalServerError", code: 500 }));
  assert.equal(reading.error, "engine died");
});

test("an empty error message is no message", () => {
  assert.equal(upstreamErrorMessage({ message: "" }), null);
  assert.equal(upstreamErrorMessage({ message: "  ", error: { message: "the real one" } }), "the real one");
});

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseChatRequest } from "../../src/protocol/chat-request.js";
import { ApiError } from "../../src/protocol/errors.js";
import { SEED_RANGES } from "../../src/protocol/parameters.js";

const base = { model: "m", messages: [{ role: "user", content: "Hi" }] };
const parse = (extra: Record<string, unknown> = {}) => parseChatRequest({ ...base, ...extra }, SEED_RANGES);

function rejects(extra: Record<string, unknown>, code: string, param: string | null, message?: RegExp): void {
  assert.throws(
    () => parse(extra),
    (error: unknown) => {
      assert.ok(error instanceof ApiError, String(error));
      assert.equal(error.code, code);
      assert.equal(error.param, param);
      if (message !== undefined) assert.match(error.message, message);
      return true;
    },
  );
}

describe("defaults are the seed's", () => {
  test("every optional field", () => {
    const request = parse();
    assert.equal(request.temperature, 0.7);
    assert.equal(request.topP, 0.7);
    assert.equal(request.maxTokens, 200);
    assert.equal(request.presencePenalty, 0);
    assert.equal(request.frequencyPenalty, 0);
    assert.deepEqual(request.stop, []);
    assert.equal(request.stream, false);
    assert.equal(request.includeUsage, false);
    assert.equal(request.seed, undefined);
  });

  test("null means not given", () => {
    const request = parse({ temperature: null, top_p: null, max_tokens: null, stop: null, stream: null, seed: null });
    assert.equal(request.temperature, 0.7);
    assert.equal(request.maxTokens, 200);
  });
});

describe("ranges", () => {
  test("boundaries are accepted", () => {
    for (const value of [0, 1]) assert.equal(parse({ temperature: value }).temperature, value);
    assert.equal(parse({ top_p: 1 }).topP, 1);
    assert.equal(parse({ top_p: 1e-9 }).topP, 1e-9);
    assert.equal(parse({ max_tokens: 1 }).maxTokens, 1);
    assert.equal(parse({ max_tokens: 4096 }).maxTokens, 4096);
    assert.equal(parse({ presence_penalty: -2, frequency_penalty: 2 }).presencePenalty, -2);
  });

  test("values outside are rejected, naming the param", () => {
    rejects({ temperature: 1.01 }, "invalid_value", "temperature", /<= 1/);
    rejects({ temperature: -0.1 }, "invalid_value", "temperature", />= 0/);
    rejects({ top_p: 0 }, "invalid_value", "top_p", /> 0/);
    rejects({ top_p: 1.5 }, "invalid_value", "top_p");
    rejects({ max_tokens: 0 }, "invalid_value", "max_tokens");
    rejects({ max_tokens: 4097 }, "invalid_value", "max_tokens");
    rejects({ max_tokens: 1.5 }, "invalid_type", "max_tokens", /integer/);
    rejects({ max_tokens: 1e20 }, "invalid_value", "max_tokens");
    rejects({ presence_penalty: 2.5 }, "invalid_value", "presence_penalty");
    rejects({ frequency_penalty: -2.5 }, "invalid_value", "frequency_penalty");
  });

  test("a deployment may widen a range", () => {
    const ranges = { ...SEED_RANGES, temperature: { min: 0, max: 2 } };
    assert.equal(parseChatRequest({ ...base, temperature: 1.5 }, ranges).temperature, 1.5);
  });

  test("non-finite numbers are wrong types", () => {
    rejects({ temperature: Number.POSITIVE_INFINITY }, "invalid_type", "temperature", /too large to represent/);
    rejects({ temperature: Number.NaN }, "invalid_type", "temperature");
  });

  test("max_completion_tokens is OpenAI's newer name for max_tokens", () => {
    assert.equal(parse({ max_completion_tokens: 12 }).maxTokens, 12);
    rejects({ max_completion_tokens: 5000 }, "invalid_value", "max_completion_tokens");
  });
});

describe("types", () => {
  test("wrong types name the field", () => {
    rejects({ temperature: "0.5" }, "invalid_type", "temperature", /expected a number, but got a string/);
    rejects({ stream: "true" }, "invalid_type", "stream");
    rejects({ seed: 1.5 }, "invalid_type", "seed");
    rejects({ stop: 5 }, "invalid_type", "stop");
    rejects({ stop: ["a", 3] }, "invalid_type", "stop[1]");
    rejects({ stream_options: { include_usage: "yes" } }, "invalid_type", "stream_options.include_usage");
    rejects({ model: 7 }, "invalid_type", "model");
  });

  test("the body must be an object", () => {
    assert.throws(() => parseChatRequest([1, 2], SEED_RANGES), /JSON object/);
    assert.throws(() => parseChatRequest("hi", SEED_RANGES), /JSON object/);
  });
});

describe("messages", () => {
  test("missing and empty", () => {
    assert.throws(() => parseChatRequest({ model: "m" }, SEED_RANGES), /Missing required parameter: 'messages'/);
    rejects({ messages: [] }, "invalid_value", "messages", /at least 1/);
    rejects({ messages: "hi" }, "invalid_type", "messages");
    rejects({ messages: [null] }, "invalid_type", "messages[0]");
  });

  test("roles", () => {
    rejects({ messages: [{ role: "robot", content: "x" }] }, "invalid_value", "messages[0].role", /'system', 'user', 'assistant'/);
    rejects({ messages: [{ role: "tool", content: "x", tool_call_id: "a" }] }, "unsupported_parameter", "messages[0].role", /not supported/);
    rejects({ messages: [{ content: "x" }] }, "missing_required_parameter", "messages[0].role");
    assert.equal(parse({ messages: [{ role: "developer", content: "Be brief." }] }).messages[0]?.role, "system");
  });

  test("content is a string or text parts", () => {
    const request = parse({ messages: [{ role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] }] });
    assert.equal(request.messages[0]?.content, "ab");
    rejects({ messages: [{ role: "user", content: 5 }] }, "invalid_type", "messages[0].content");
    rejects(
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] },
      "unsupported_parameter",
      "messages[0].content[0].type",
      /not supported yet/,
    );
    rejects({ messages: [{ role: "user" }] }, "missing_required_parameter", "messages[0].content");
  });

  test("assistant tool calls are not supported yet", () => {
    rejects(
      { messages: [{ role: "assistant", content: null, tool_calls: [{ id: "1" }] }] },
      "unsupported_parameter",
      "messages[0].tool_calls",
    );
  });
});

describe("stop", () => {
  test("a string or up to four non-empty strings", () => {
    assert.deepEqual(parse({ stop: "\n" }).stop, ["\n"]);
    assert.deepEqual(parse({ stop: ["a", "b", "c", "d"] }).stop, ["a", "b", "c", "d"]);
    rejects({ stop: ["a", "b", "c", "d", "e"] }, "invalid_value", "stop", /at most 4/);
    rejects({ stop: "" }, "invalid_value", "stop");
    rejects({ stop: ["a", ""] }, "invalid_value", "stop[1]");
  });
});

describe("features not implemented yet are refused, never ignored", () => {
  test("each names itself", () => {
    rejects({ n: 2 }, "unsupported_parameter", "n");
    rejects({ tools: [{ type: "function", function: { name: "f" } }] }, "unsupported_parameter", "tools");
    rejects({ response_format: { type: "json_object" } }, "unsupported_parameter", "response_format");
    rejects({ logprobs: true }, "unsupported_parameter", "logprobs");
    rejects({ logit_bias: { "50256": -100 } }, "unsupported_parameter", "logit_bias");
    rejects({ tool_choice: "auto" }, "unsupported_parameter", "tool_choice");
  });

  test("their off values are fine", () => {
    parse({ n: 1, tools: [], logprobs: false, response_format: { type: "text" }, logit_bias: {}, tool_choice: "none" });
  });

  test("unknown fields are ignored", () => {
    assert.equal(parse({ frobnicate: true, user: "u-1", metadata: { a: 1 } }).model, "m");
  });
});

describe("seed", () => {
  test("folds any safe integer into a uint32 other than llama.cpp's 'random' 0xFFFFFFFF", () => {
    assert.equal(parse({ seed: 42 }).seed, 42);
    assert.equal(parse({ seed: 0 }).seed, 0);
    assert.equal(parse({ seed: 2 ** 32 - 2 }).seed, 2 ** 32 - 2);
    assert.equal(parse({ seed: 2 ** 32 - 1 }).seed, 0);
    assert.equal(parse({ seed: -1 }).seed, 2 ** 32 - 2);
    assert.equal(parse({ seed: 2 ** 40 + 5 }).seed, 2 ** 8 + 5); // 2^32 ≡ 1 (mod 2^32 - 1)
    assert.equal(parse({ seed: Number.MIN_SAFE_INTEGER }).seed! < 2 ** 32 - 1, true);
  });
});

/**
 * The seed's defaults and ranges (DESIGN §3): every default applied, every boundary
 * accepted, every value just outside rejected with a 400 naming its `param`, and ranges
 * that a deployment widens.
 */
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { SEED_RANGES } from "../../src/protocol/parameters.js";
import { assertCompletionShape, chatBody, expectError, expectServes, type Completion } from "../helpers/chat-assertions.js";
import { LLAMA2_TINY_RANDOM, STORIES_260K, tinyQwen2 } from "../helpers/models.js";
import { postChat, startParley, type RunningParley } from "../helpers/parley.js";

async function complete(parley: RunningParley, body: Record<string, unknown>): Promise<Completion> {
  const response = await postChat(parley, body);
  const text = await response.text();
  assert.equal(response.status, 200, `${JSON.stringify(body)} → ${text}`);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  const completion = JSON.parse(text) as Completion;
  assertCompletionShape(completion, String(body.model));
  return completion;
}

const contentOf = (completion: Completion): string => completion.choices[0]?.message.content ?? "";

describe("defaults", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: LLAMA2_TINY_RANDOM });
  });
  after(async () => {
    await parley?.close();
  });

  test("max_tokens defaults to 200: a model that rarely ends its turn stops at 200 with 'length'", async () => {
    const completion = await complete(parley, { model: "test-model", messages: [{ role: "user", content: "Hello!" }], seed: 11 });
    assert.equal(completion.usage.completion_tokens, 200);
    assert.equal(completion.choices[0]?.finish_reason, "length");
    assert.equal(completion.choices[0]?.stop_reason, null);
  });

  test("null means not given", async () => {
    const completion = await complete(parley, {
      model: "test-model",
      messages: [{ role: "user", content: "Hello!" }],
      seed: 11,
      max_tokens: null,
      temperature: null,
      top_p: null,
      presence_penalty: null,
      frequency_penalty: null,
      stop: null,
      stream: null,
    });
    assert.equal(completion.usage.completion_tokens, 200);
  });

  test("temperature 0.7, top_p 0.7 and penalties 0 are the defaults: same seed, same text as when given explicitly", async () => {
    const base = { model: "test-model", messages: [{ role: "user", content: "Tell me something." }], seed: 1234, max_tokens: 40 };
    const implicit = await complete(parley, base);
    const explicit = await complete(parley, { ...base, temperature: 0.7, top_p: 0.7, presence_penalty: 0, frequency_penalty: 0 });
    assert.equal(contentOf(implicit), contentOf(explicit));
    assert.equal(implicit.usage.completion_tokens, explicit.usage.completion_tokens);
  });

  test("every seed repeats, -1 and 4294967295 included (llama.cpp reads 0xFFFFFFFF as 'pick one at random')", async () => {
    for (const seed of [-1, 2 ** 32 - 1, 7]) {
      const body = { model: "test-model", messages: [{ role: "user", content: "Tell me something." }], seed, temperature: 1, top_p: 1, max_tokens: 40 };
      const first = await complete(parley, body);
      const second = await complete(parley, body);
      assert.equal(contentOf(second), contentOf(first), `seed ${seed}`);
    }
  });

  test("stream defaults to false: one JSON body", async () => {
    const response = await postChat(parley, chatBody());
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    assert.equal(((await response.json()) as Completion).object, "chat.completion");
  });
});

describe("ranges", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: STORIES_260K });
  });
  after(async () => {
    await parley?.close();
  });
  afterEach(async () => {
    await expectServes(parley);
  });

  test("boundaries are accepted", async () => {
    const accepted: Array<Record<string, unknown>> = [
      { temperature: 0 },
      { temperature: 1 },
      { top_p: 1 },
      { top_p: 1e-6 },
      { top_p: Number.MIN_VALUE },
      { presence_penalty: -2 },
      { presence_penalty: 2 },
      { frequency_penalty: -2 },
      { frequency_penalty: 2 },
      { presence_penalty: 2, frequency_penalty: -2 },
      { stop: "the" },
      { stop: ["the", "was", ".", "\n"] },
      { stop: [] },
      { seed: 0 },
      { seed: -1 },
      { seed: Number.MAX_SAFE_INTEGER },
      { stream: false },
      { stream_options: { include_usage: false } },
    ];
    for (const overrides of accepted) await complete(parley, chatBody({ seed: 5, ...overrides }));
  });

  test("max_tokens 1 generates at most one token", async () => {
    const completion = await complete(parley, chatBody({ max_tokens: 1, temperature: 0 }));
    assert.ok(completion.usage.completion_tokens <= 1);
    if (completion.choices[0]?.finish_reason === "length") assert.equal(completion.usage.completion_tokens, 1);
  });

  test("max_completion_tokens, OpenAI's newer name, limits the completion too", async () => {
    const completion = await complete(parley, chatBody({ max_tokens: undefined, max_completion_tokens: 3, temperature: 0 }));
    assert.ok(completion.usage.completion_tokens <= 3);
  });

  const rejected: Array<[string, Record<string, unknown>, string, string]> = [
    ["temperature above 1", { temperature: 1.01 }, "temperature", "invalid_value"],
    ["temperature below 0", { temperature: -0.1 }, "temperature", "invalid_value"],
    ["top_p 0", { top_p: 0 }, "top_p", "invalid_value"],
    ["top_p negative", { top_p: -0.5 }, "top_p", "invalid_value"],
    ["top_p above 1", { top_p: 1.5 }, "top_p", "invalid_value"],
    ["max_tokens 0", { max_tokens: 0 }, "max_tokens", "invalid_value"],
    ["max_tokens negative", { max_tokens: -1 }, "max_tokens", "invalid_value"],
    ["max_tokens 4097", { max_tokens: 4097 }, "max_tokens", "invalid_value"],
    ["max_tokens 1.5", { max_tokens: 1.5 }, "max_tokens", "invalid_type"],
    ["presence_penalty 2.5", { presence_penalty: 2.5 }, "presence_penalty", "invalid_value"],
    ["presence_penalty -2.5", { presence_penalty: -2.5 }, "presence_penalty", "invalid_value"],
    ["frequency_penalty 2.5", { frequency_penalty: 2.5 }, "frequency_penalty", "invalid_value"],
    ["frequency_penalty -2.5", { frequency_penalty: -2.5 }, "frequency_penalty", "invalid_value"],
    ["stop: 5 strings", { stop: ["a", "b", "c", "d", "e"] }, "stop", "invalid_value"],
    ["stop: an empty string", { stop: "" }, "stop", "invalid_value"],
    ["stop: an empty string in an array", { stop: ["the", ""] }, "stop[1]", "invalid_value"],
    ["stop: a number", { stop: 5 }, "stop", "invalid_type"],
    ["stop: an object", { stop: { word: "the" } }, "stop", "invalid_type"],
    ["stop: a boolean", { stop: true }, "stop", "invalid_type"],
    ["stop: a number in an array", { stop: ["the", 7] }, "stop[1]", "invalid_type"],
  ];
  for (const [name, overrides, param, code] of rejected) {
    test(`rejected: ${name}`, async () => {
      const body = await expectError(await postChat(parley, chatBody(overrides)), { status: 400, code, param });
      assert.ok(body.error.message.includes(param.replace(/\[\d+\]$/, "")), `the message names '${param}': ${body.error.message}`);
    });
  }

  test("rejected when streaming too, as a JSON 400 before any stream starts", async () => {
    await expectError(await postChat(parley, chatBody({ stream: true, temperature: 1.01 })), { status: 400, code: "invalid_value", param: "temperature" });
  });

  test("rejected: max_completion_tokens out of range names max_completion_tokens", async () => {
    await expectError(await postChat(parley, chatBody({ max_completion_tokens: 0 })), {
      status: 400,
      code: "invalid_value",
      param: "max_completion_tokens",
    });
  });
});

describe("max_tokens 4096", () => {
  test("accepted where the context holds the prompt plus 4096 tokens", async () => {
    const parley = await startParley({ modelPath: await tinyQwen2(), contextSize: 8192 });
    try {
      // Stop at the first character the model writes, so the test does not wait for 4096 tokens.
      const probe = await complete(parley, chatBody({ temperature: 0, max_tokens: 3 }));
      const first = contentOf(probe).slice(0, 1);
      const completion = await complete(parley, chatBody({ temperature: 0, max_tokens: 4096, ...(first.length > 0 ? { stop: first } : {}) }));
      assert.ok(completion.usage.completion_tokens <= 3, `stopped early: ${completion.usage.completion_tokens}`);
    } finally {
      await parley.close();
    }
  });

  test("within range but beyond a 4096-token context: context_length_exceeded, not invalid_value", async () => {
    const parley = await startParley({ modelPath: LLAMA2_TINY_RANDOM, contextSize: 4096 });
    try {
      await expectError(await postChat(parley, chatBody({ max_tokens: 4096 })), { status: 400, code: "context_length_exceeded", param: "messages" });
      await expectServes(parley);
    } finally {
      await parley.close();
    }
  });
});

describe("configured ranges", () => {
  let wide: RunningParley;
  before(async () => {
    wide = await startParley({ modelPath: STORIES_260K, ranges: { ...SEED_RANGES, temperature: { min: 0, max: 2 } } });
  });
  after(async () => {
    await wide?.close();
  });

  test("a deployment that widens temperature to [0, 2] accepts 1.5 and 2", async () => {
    await complete(wide, chatBody({ temperature: 1.5 }));
    await complete(wide, chatBody({ temperature: 2 }));
  });

  test("and still rejects beyond its own range", async () => {
    await expectError(await postChat(wide, chatBody({ temperature: 2.01 })), { status: 400, code: "invalid_value", param: "temperature" });
    await expectError(await postChat(wide, chatBody({ temperature: -0.01 })), { status: 400, code: "invalid_value", param: "temperature" });
  });

  test("its other ranges stay the seed's, and so do the defaults", async () => {
    await expectError(await postChat(wide, chatBody({ top_p: 0 })), { status: 400, code: "invalid_value", param: "top_p" });
    const base = { ...chatBody({ seed: 99, max_tokens: 30 }) };
    const implicit = await complete(wide, base);
    const explicit = await complete(wide, { ...base, temperature: 0.7 });
    assert.equal(contentOf(implicit), contentOf(explicit), "temperature still defaults to 0.7");
  });
});

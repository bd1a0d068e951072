/**
 * Streaming (DESIGN §3): the same text as without streaming, chunk by chunk in the
 * documented shape, multi-byte characters never split, and usage that adds up —
 * including `prompt_tokens` counted exactly on the ChatML template path.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { resolveChatWrapper, type Token } from "node-llama-cpp";
import { renderPrompt } from "../../src/backends/local/render-prompt.js";
import {
  assertCompletionShape,
  assertUsage,
  chunksOf,
  COMPLETION_ID,
  LONE_SURROGATE,
  streamedText,
  type Chunk,
  type Completion,
} from "../helpers/chat-assertions.js";
import { LLAMA2_TINY_RANDOM, STORIES_260K, tinyQwen2 } from "../helpers/models.js";
import { postChat, readEvents, startParley, testLlama, type RunningParley } from "../helpers/parley.js";

type Body = Record<string, unknown>;

interface Streamed {
  chunks: Chunk[];
  raw: string;
  response: Response;
}

async function streamChat(parley: RunningParley, body: Body, init: { path?: string } = {}): Promise<Streamed> {
  const response = await postChat(parley, { ...body, stream: true }, init);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
  const raw = await response.clone().text();
  return { chunks: chunksOf(await readEvents(response)), raw, response };
}

async function completeChat(parley: RunningParley, body: Body): Promise<Completion> {
  const response = await postChat(parley, { ...body, stream: false });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  const completion = JSON.parse(text) as Completion;
  assertCompletionShape(completion, String(body.model));
  return completion;
}

/** Every rule of DESIGN §3 for one stream's chunks; returns the finish chunk's choice. */
function assertStreamShape(chunks: readonly Chunk[], options: { model: string; includeUsage: boolean }): NonNullable<Chunk["choices"][0]> {
  const [first] = chunks;
  assert.ok(first !== undefined);
  assert.match(first.id, COMPLETION_ID);
  const now = Date.now() / 1000;
  assert.ok(Number.isInteger(first.created) && Math.abs(first.created - now) < 3600, "created is integer seconds");
  for (const chunk of chunks) {
    assert.equal(chunk.object, "chat.completion.chunk");
    assert.equal(chunk.id, first.id, "the same id on every chunk");
    assert.equal(chunk.created, first.created, "the same created on every chunk");
    assert.equal(chunk.model, options.model);
    const content = chunk.choices[0]?.delta.content ?? "";
    assert.doesNotMatch(content, LONE_SURROGATE, `a lone surrogate in chunk ${JSON.stringify(content)}`);
  }
  assert.equal(first.choices[0]?.delta.role, "assistant", "the first delta carries the role");
  for (const chunk of chunks.slice(1)) assert.equal(chunk.choices[0]?.delta.role, undefined, "only the first delta carries the role");

  const withChoices = options.includeUsage ? chunks.slice(0, -1) : chunks;
  for (const chunk of withChoices) {
    assert.equal(chunk.choices.length, 1);
    assert.equal(chunk.choices[0]?.index, 0);
    assert.equal(chunk.choices[0]?.logprobs ?? null, null);
    assert.equal(chunk.usage ?? undefined, undefined, "no usage on a chunk with choices");
  }
  const finishing = withChoices.filter((chunk) => (chunk.choices[0]?.finish_reason ?? null) !== null);
  assert.equal(finishing.length, 1, "exactly one chunk carries a finish_reason");
  assert.equal(finishing[0], withChoices.at(-1), "and it is the last chunk with choices");
  const finish = finishing[0]?.choices[0];
  assert.ok(finish !== undefined);
  assert.ok(finish.finish_reason === "stop" || finish.finish_reason === "length");

  if (options.includeUsage) {
    const last = chunks.at(-1);
    assert.deepEqual(last?.choices, [], "the usage chunk has no choices");
    assertUsage(last?.usage);
  }
  return finish;
}

/** Streams and completes the same request; asserts they agree and returns both. */
async function bothModes(parley: RunningParley, body: Body): Promise<{ streamed: Streamed; completion: Completion }> {
  const streamed = await streamChat(parley, { ...body, stream_options: { include_usage: true } });
  const completion = await completeChat(parley, body);
  const finish = assertStreamShape(streamed.chunks, { model: String(body.model), includeUsage: true });
  const choice = completion.choices[0];
  assert.equal(streamedText(streamed.chunks), choice?.message.content, "streamed text equals the non-streamed text");
  assert.equal(finish.finish_reason, choice?.finish_reason);
  assert.equal(finish.stop_reason ?? null, choice?.stop_reason);
  const usage = streamed.chunks.at(-1)?.usage;
  assert.equal(usage?.prompt_tokens, completion.usage.prompt_tokens);
  assert.equal(usage?.completion_tokens, completion.usage.completion_tokens);
  assert.equal(usage?.total_tokens, completion.usage.total_tokens);
  return { streamed, completion };
}

describe("streaming on stories260K", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: STORIES_260K });
  });
  after(async () => {
    await parley?.close();
  });

  const body = { model: "test-model", messages: [{ role: "user", content: "Once upon a time" }], temperature: 0, seed: 21, max_tokens: 80 };

  test("the streamed text equals the non-streamed text at temperature 0", async () => {
    const { completion } = await bothModes(parley, body);
    assert.ok((completion.choices[0]?.message.content ?? "").length > 20, "a real story");
    if (completion.choices[0]?.finish_reason === "length") assert.equal(completion.usage.completion_tokens, 80);
  });

  test("with a seed, sampling at the default temperature agrees across modes", async () => {
    await bothModes(parley, { ...body, temperature: undefined, top_p: undefined, seed: 4242 });
  });

  test("the wire format: data: <json> and a blank line per event, then data: [DONE]", async () => {
    const { raw, response } = await streamChat(parley, body, { path: "/model/api/v1/chat/completions" });
    assert.match(raw, /^(data: [^\n]+\n\n)+$/);
    assert.ok(raw.endsWith("data: [DONE]\n\n"));
    assert.ok((response.headers.get("x-request-id") ?? "").length > 0);
    assert.equal(raw.match(/data: \[DONE\]/g)?.length, 1);
  });

  test("without include_usage no chunk has usage, and the finish chunk comes last", async () => {
    for (const streamOptions of [undefined, { include_usage: false }, null]) {
      const { chunks } = await streamChat(parley, { ...body, stream_options: streamOptions });
      assertStreamShape(chunks, { model: "test-model", includeUsage: false });
      for (const chunk of chunks) assert.equal(chunk.usage ?? undefined, undefined);
    }
  });

  test("usage arithmetic: length means max_tokens generated; a longer prompt counts more", async () => {
    const short = await completeChat(parley, { ...body, max_tokens: 7 });
    assert.equal(short.choices[0]?.finish_reason, "length");
    assert.equal(short.usage.completion_tokens, 7);
    const longer = await completeChat(parley, {
      ...body,
      max_tokens: 7,
      messages: [
        { role: "system", content: "You tell stories." },
        { role: "user", content: "Once upon a time" },
        { role: "assistant", content: "there was a cat." },
        { role: "user", content: "And then?" },
      ],
    });
    assert.ok(longer.usage.prompt_tokens > short.usage.prompt_tokens, `${longer.usage.prompt_tokens} > ${short.usage.prompt_tokens}`);
    for (const completion of [short, longer]) assertUsage(completion.usage);
  });
});

describe("streaming on llama-2-tiny-random", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: LLAMA2_TINY_RANDOM });
  });
  after(async () => {
    await parley?.close();
  });

  test("the streamed text equals the non-streamed text at temperature 0", async () => {
    await bothModes(parley, { model: "test-model", messages: [{ role: "user", content: "🎉 Ελληνικά" }], temperature: 0, seed: 5, max_tokens: 60 });
  });

  test("sampled multilingual output: no chunk holds a lone surrogate", async () => {
    for (const seed of [1, 2, 3]) {
      await bothModes(parley, { model: "test-model", messages: [{ role: "user", content: "写一首诗 😀" }], temperature: 1, top_p: 1, seed, max_tokens: 120 });
    }
  });
});

describe("streaming on a tiny Qwen2 (ChatML)", () => {
  let parley: RunningParley;
  let modelPath: string;
  before(async () => {
    modelPath = await tinyQwen2();
    parley = await startParley({ modelPath });
  });
  after(async () => {
    await parley?.close();
  });

  const messages = [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "Hello!" },
  ] as const;

  test("the streamed text equals the non-streamed text at temperature 0", async () => {
    await bothModes(parley, { model: "test-model", messages, temperature: 0, seed: 9, max_tokens: 60 });
  });

  test("usage.prompt_tokens is exactly the token count of the ChatML rendering", async () => {
    const chatml =
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n";
    const model = await (await testLlama()).loadModel({ modelPath });
    try {
      const expected = model.tokenize(chatml, true).length;
      const completion = await completeChat(parley, { model: "test-model", messages, max_tokens: 1 });
      assert.equal(completion.usage.prompt_tokens, expected, `the prompt is the ChatML text and nothing else (${expected} tokens)`);
      const streamed = await streamChat(parley, { model: "test-model", messages, max_tokens: 1, stream_options: { include_usage: true } });
      assert.equal(streamed.chunks.at(-1)?.usage?.prompt_tokens, expected);
    } finally {
      await model.dispose();
    }
  });

  test("a character made of several tokens is never split across chunks", async () => {
    // Generate in-process with the same model, prompt and sampler settings, detokenize the
    // whole output at once, and compare: a split character would arrive as U+FFFD halves.
    const llama = await testLlama();
    const model = await llama.loadModel({ modelPath });
    const context = await model.createContext({ contextSize: 4096, sequences: 1, threads: 1 });
    try {
      const chat = [{ role: "user" as const, content: "写一首诗" }];
      let prompt = renderPrompt(resolveChatWrapper(model), chat).text.tokenize(model.tokenizer);
      // Evaluate exactly the prompt the server does: whether it keeps the template's leading
      // BOS is the prompt_tokens test's business, not this one's.
      const served = await completeChat(parley, { model: "test-model", messages: chat, max_tokens: 1 });
      if (served.usage.prompt_tokens === prompt.length - 1 && prompt[0] === model.tokens.bos) prompt = prompt.slice(1);
      assert.equal(served.usage.prompt_tokens, prompt.length);
      let exercised = false;
      for (const seed of [3, 4, 5, 6, 7, 8]) {
        const sequence = context.getSequence();
        const generated: Token[] = [];
        try {
          for await (const token of sequence.evaluate(prompt, { temperature: 0.7, topP: 0.7, seed })) {
            if (model.isEogToken(token)) break;
            generated.push(token);
            if (generated.length >= 80) break;
          }
        } finally {
          sequence.dispose();
        }
        const partial = generated.filter((token) => model.detokenize([token]).includes("\uFFFD")).length;
        const expected = model.detokenize(generated);
        const { streamed } = await bothModes(parley, { model: "test-model", messages: chat, temperature: 0.7, top_p: 0.7, seed, max_tokens: 80 });
        assert.equal(streamedText(streamed.chunks), expected, `seed ${seed}: the server's text is the whole output detokenized at once`);
        if (partial > 0 && /[^\u0000-\u007f]/.test(expected)) exercised = true;
        if (exercised) break;
      }
      assert.ok(exercised, "some seed produced a character spread over several tokens");
    } finally {
      await context.dispose();
      await model.dispose();
    }
  });
});

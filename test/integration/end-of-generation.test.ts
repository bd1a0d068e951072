/**
 * How a generation ends at the model's own end-of-generation token, on a model that samples it
 * first every time (endsAtOnceQwen2): both decode loops stop without yielding it and leave only
 * the prompt in the cache, and the API answers `finish_reason: "stop"`, `stop_reason: null`,
 * empty content and zero completion tokens, streaming or not.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { LlamaContextSequence, LlamaModel } from "node-llama-cpp";
import { DecodeLoop } from "../../src/backends/local/decode-loop.js";
import { nativeLoopAddon } from "../../src/backends/local/llama-tuning.js";
import { createContextWithLoop } from "../../src/backends/local/native-decode-loop.js";
import { assertCompletionShape, chunksOf, streamedText, type Completion } from "../helpers/chat-assertions.js";
import { endsAtOnceQwen2 } from "../helpers/models.js";
import { postChat, readEvents, startParley, testLlama, type RunningParley } from "../helpers/parley.js";

describe("the decode loops at the model's end-of-generation token", () => {
  let model: LlamaModel;
  before(async () => {
    model = await (await testLlama()).loadModel({ modelPath: await endsAtOnceQwen2() });
  });
  after(async () => {
    await model.dispose();
  });

  for (const kind of ["native", "library"] as const) {
    test(`${kind}: the generation ends without yielding it, greedy or sampled; the cache holds the prompt`, async () => {
      const created = await createContextWithLoop(kind === "native" ? nativeLoopAddon() : undefined, () => model.createContext({ contextSize: 256, sequences: 1, threads: 1 }), 1);
      const decoder = created.loop ?? new DecodeLoop();
      assert.equal(decoder.kind, kind, created.why ?? "");
      const sequence = created.sequences[0] as LlamaContextSequence;
      try {
        const prompt = model.tokenize("Hello there, how are you?");
        for (const temperature of [0, 1.5]) {
          const tokens = [];
          for await (const token of decoder.tokens(sequence, prompt, 0, { temperature, topP: 1, seed: 5, presencePenalty: 0, frequencyPenalty: 0 }, 20)) tokens.push(token);
          assert.deepEqual(tokens, [], `temperature ${temperature}`);
          assert.deepEqual(decoder.cachedTokens(sequence), prompt);
        }
      } finally {
        decoder.close();
        await created.context.dispose();
      }
    });
  }
});

describe("the chat API at the model's end-of-generation token", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: await endsAtOnceQwen2(), aliases: ["ends"] });
  });
  after(async () => {
    await parley.close();
  });
  const body = { model: "ends", messages: [{ role: "user", content: "Say nothing." }], max_tokens: 50 };

  test("not streaming: finish_reason stop, stop_reason null, empty content, no completion tokens", async () => {
    const response = await postChat(parley, body);
    assert.equal(response.status, 200);
    const completion = (await response.json()) as Completion;
    assertCompletionShape(completion, "ends");
    const [choice] = completion.choices;
    assert.equal(choice?.finish_reason, "stop");
    assert.equal(choice?.stop_reason, null);
    assert.equal(choice?.message.content, "");
    assert.equal(completion.usage.completion_tokens, 0);
    assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens);
  });

  test("streaming: the same, then [DONE]", async () => {
    const response = await postChat(parley, { ...body, stream: true, stream_options: { include_usage: true } });
    assert.equal(response.status, 200);
    const chunks = chunksOf(await readEvents(response));
    assert.equal(streamedText(chunks), "");
    const finish = chunks.find((chunk) => chunk.choices[0]?.finish_reason !== null && chunk.choices[0]?.finish_reason !== undefined);
    assert.equal(finish?.choices[0]?.finish_reason, "stop");
    assert.equal(chunks.at(-1)?.usage?.completion_tokens, 0);
  });
});

/**
 * Both decode loops on a real model (stories260K): Parley's native loop (native/decode-loop.c)
 * and the lockstep loop over node-llama-cpp's `evaluate`. Each: generations running together
 * produce exactly what each produces alone, a reader that stops reading holds its generation a
 * bounded distance ahead, ending an iteration frees its sequence for the next request at once,
 * and a reused prefix gives what a cold start gives. The native loop also: prompts longer than
 * a batch, seeded sampling, penalties, limits, and closing under a running generation.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import type { LlamaContext, LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp";
import { DecodeLoop } from "../../src/backends/local/decode-loop.js";
import { nativeLoopAddon, tuningStatus, type NativeLoopAddon } from "../../src/backends/local/llama-tuning.js";
import { createContextWithLoop } from "../../src/backends/local/native-decode-loop.js";
import { GREEDY, MAX_AHEAD, type Sampling, type SequenceDecoder } from "../../src/backends/local/sequence-decoder.js";
import { STORIES_260K } from "../helpers/models.js";
import { testLlama } from "../helpers/parley.js";

const PROMPTS = ["Once upon a time", "The little dog", "Lily liked to", "One day, a big"];

async function collect(iterator: AsyncIterable<Token>, count = Infinity): Promise<Token[]> {
  const tokens: Token[] = [];
  for await (const token of iterator) {
    tokens.push(token);
    if (tokens.length >= count) break;
  }
  return tokens;
}

let model: LlamaModel;
before(async () => {
  model = await (await testLlama()).loadModel({ modelPath: STORIES_260K });
});
after(async () => {
  await model.dispose();
});

for (const kind of ["native", "library"] as const) {
  describe(`the ${kind} decode loop`, () => {
    let context: LlamaContext;
    let sequences: LlamaContextSequence[];
    let decoder: SequenceDecoder;
    before(async () => {
      assert.ok(kind === "library" || tuningStatus().nativeLoop, "the native addon is built and loaded (npm run build)");
      const created = await createContextWithLoop(
        kind === "native" ? nativeLoopAddon() : undefined,
        () => model.createContext({ contextSize: 1024, sequences: 4, threads: 1, batchSize: 128 }),
        4,
      );
      context = created.context;
      sequences = created.sequences;
      decoder = created.loop ?? new DecodeLoop();
      assert.equal(decoder.kind, kind, created.why ?? "");
    });
    after(async () => {
      decoder.close();
      await context.dispose();
    });

    const seq = (index: number): LlamaContextSequence => sequences[index] as LlamaContextSequence;

    test("four generations together produce, token for token, what each produces alone", async () => {
      const alone: Token[][] = [];
      for (const prompt of PROMPTS) alone.push(await collect(decoder.tokens(seq(0), model.tokenize(prompt), 0, GREEDY, 24)));
      const together = await Promise.all(PROMPTS.map((prompt, index) => collect(decoder.tokens(seq(index), model.tokenize(prompt), 0, GREEDY, 24))));
      assert.deepEqual(together, alone);
      assert.ok(alone.every((tokens) => tokens.length === 24));
      assert.equal(decoder.active, 0, "every generation left the loop");
    });

    test("a reader that stops reading holds its generation a few tokens ahead, not to its limit", async () => {
      const prompt = model.tokenize("Once upon a time");
      const tokens = decoder.tokens(seq(1), prompt, 0, GREEDY, 200);
      await tokens.next(); // one token read, then nothing
      await sleep(300);
      await tokens.return?.();
      const decoded = decoder.cachedTokens(seq(1)).length - prompt.length;
      assert.ok(decoded <= MAX_AHEAD + 2, `${decoded} tokens decoded past the prompt while the reader waited`);
    });

    test("ending an iteration frees its sequence at once, with what was decoded in its cache", async () => {
      const prompt = model.tokenize("The little dog");
      const running = decoder.tokens(seq(3), model.tokenize("Lily liked to"), 0, GREEDY, 200);
      const tokens = decoder.tokens(seq(2), prompt, 0, GREEDY, 200);
      const [first] = await Promise.all([tokens.next(), running.next()]);
      const second = await tokens.next();
      await tokens.return?.();
      const cached = decoder.cachedTokens(seq(2));
      assert.deepEqual(cached.slice(0, prompt.length + 1), [...prompt, first.value]);
      assert.equal(cached[prompt.length + 1] ?? second.value, second.value);
      for (let index = 0; index < 5; index++) await running.next(); // the loop steps on without it
      assert.deepEqual(decoder.cachedTokens(seq(2)), cached, "nothing more was decoded on it");
      // The next request takes the sequence at once, and a cold start there gives a fresh result.
      const again = await collect(decoder.tokens(seq(2), prompt, 0, GREEDY, 6));
      assert.deepEqual(again.slice(0, 2), [first.value, second.value]);
      await running.return?.();
    });

    test("a follow-up that reuses the cached prefix continues exactly as a cold start would", async () => {
      const first = model.tokenize("Once upon a time, there was a girl");
      const reply = await collect(decoder.tokens(seq(0), first, 0, GREEDY, 10));
      const followUp = [...first, ...reply, ...model.tokenize(" She said")];
      const cached = decoder.cachedTokens(seq(0));
      let reused = 0;
      while (reused < Math.min(cached.length, followUp.length - 1) && cached[reused] === followUp[reused]) reused += 1;
      assert.ok(reused >= first.length + reply.length - 1, `reused ${reused} tokens`);
      const warm = await collect(decoder.tokens(seq(0), followUp, reused, GREEDY, 12));
      const cold = await collect(decoder.tokens(seq(1), followUp, 0, GREEDY, 12));
      assert.deepEqual(warm, cold);
    });

    test("a prompt longer than a batch (128 tokens here) is decoded in chunks", async () => {
      const prompt = model.tokenize("Once upon a time there was a little girl who liked to play in the park. ".repeat(12));
      assert.ok(prompt.length > 256, `${prompt.length} prompt tokens: more than two batches`);
      const tokens = await collect(decoder.tokens(seq(0), prompt, 0, GREEDY, 8));
      assert.equal(tokens.length, 8);
      assert.equal(decoder.cachedTokens(seq(0)).length, prompt.length + 7, "the prompt and all but the last sampled token are cached");
    });
  });
}

describe("the native decode loop's sampling and lifecycle", () => {
  let context: LlamaContext;
  let sequences: LlamaContextSequence[];
  let decoder: SequenceDecoder;
  let library: { context: LlamaContext; sequences: LlamaContextSequence[]; decoder: DecodeLoop };
  before(async () => {
    const created = await createContextWithLoop(nativeLoopAddon(), () => model.createContext({ contextSize: 512, sequences: 2, threads: 1 }), 2);
    assert.ok(created.loop !== undefined, created.why ?? "");
    ({ context, sequences } = created);
    decoder = created.loop;
    const other = await createContextWithLoop(undefined, () => model.createContext({ contextSize: 512, sequences: 1, threads: 1 }), 1);
    library = { context: other.context, sequences: other.sequences, decoder: new DecodeLoop() };
  });
  after(async () => {
    decoder.close();
    await context.dispose();
    await library.context.dispose();
  });
  const seq = (index: number): LlamaContextSequence => sequences[index] as LlamaContextSequence;
  const prompt = (): Token[] => model.tokenize("Once upon a time");

  test("greedy output matches node-llama-cpp's own evaluate, token for token", async () => {
    const native = await collect(decoder.tokens(seq(0), prompt(), 0, GREEDY, 40));
    const reference = await collect(library.decoder.tokens(library.sequences[0] as LlamaContextSequence, prompt(), 0, GREEDY, 40));
    assert.deepEqual(native, reference);
  });

  test("a seed makes sampling repeatable; different seeds differ", async () => {
    const sampling = (seed: number): Sampling => ({ temperature: 1.5, topP: 1, seed, presencePenalty: 0, frequencyPenalty: 0 });
    const a = await collect(decoder.tokens(seq(0), prompt(), 0, sampling(7), 40));
    const b = await collect(decoder.tokens(seq(1), prompt(), 0, sampling(7), 40));
    const c = await collect(decoder.tokens(seq(0), prompt(), 0, sampling(8), 40));
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  test("a frequency penalty changes greedy output away from repeating itself", async () => {
    const plain = await collect(decoder.tokens(seq(0), prompt(), 0, GREEDY, 60));
    const penalized = await collect(decoder.tokens(seq(0), prompt(), 0, { ...GREEDY, frequencyPenalty: 2 }, 60));
    const distinct = (tokens: Token[]): number => new Set(tokens).size;
    assert.notDeepEqual(penalized, plain);
    assert.ok(distinct(penalized) > distinct(plain), `${distinct(penalized)} distinct tokens penalized, ${distinct(plain)} plain`);
  });

  // (stories260K never samples its end-of-generation token, so that ending is covered through
  // the chat API's tests on other models.)
  test("the limit ends a generation, with the last sampled token not decoded", async () => {
    assert.equal((await collect(decoder.tokens(seq(0), prompt(), 0, GREEDY, 3))).length, 3);
    assert.equal(decoder.cachedTokens(seq(0)).length, prompt().length + 2);
  });

  test("a prefix the cache does not hold is decoded anew, not trusted (the output is a cold start's)", async () => {
    const cold = await collect(decoder.tokens(seq(1), prompt(), 0, GREEDY, 12));
    // Leave a shorter prompt in the sequence's cache, then claim a reused prefix longer than
    // anything it holds (a caller's mistake: LocalBackend counts from cachedTokens).
    await collect(decoder.tokens(seq(1), model.tokenize("Lily"), 0, GREEDY, 1));
    const claimed = await collect(decoder.tokens(seq(1), prompt(), prompt().length - 1, GREEDY, 12));
    assert.deepEqual(claimed, cold);
    assert.deepEqual(decoder.cachedTokens(seq(1)).slice(0, prompt().length), prompt());
  });

  // (Through the API a prompt never outgrows its sequence: LocalBackend.prepare refuses it.)
  test("a prompt too big for the KV cache fails with an error, and every sequence decodes normally afterwards", async () => {
    const small = await createContextWithLoop(nativeLoopAddon(), () => model.createContext({ contextSize: 128, sequences: 2, threads: 1 }), 2);
    assert.ok(small.loop !== undefined, small.why ?? "");
    try {
      const [first, second] = small.sequences as [LlamaContextSequence, LlamaContextSequence];
      const expected = await collect(small.loop.tokens(first, prompt(), 0, GREEDY, 20));
      const tooLong = model.tokenize("Once upon a time there was a little girl who liked to play in the park. ".repeat(20));
      await assert.rejects(collect(small.loop.tokens(second, tooLong, 0, GREEDY, 4)), /could not decode/);
      assert.deepEqual(await collect(small.loop.tokens(second, prompt(), 0, GREEDY, 20)), expected);
      assert.deepEqual(await collect(small.loop.tokens(first, prompt(), 0, GREEDY, 20)), expected);
    } finally {
      small.loop.close();
      await small.context.dispose();
    }
  });

  test("a loop that cannot open on its context leaves the context to evaluate, saying why", async () => {
    // loopOpen refuses e.g. a batch smaller than the sequences (llama.cpp raises small batches
    // to 64, so that takes dozens of sequences); here it is made to refuse outright.
    const real = nativeLoopAddon()!;
    const refusing = {
      contextSerial: () => real.contextSerial(),
      liveContexts: () => real.liveContexts(),
      loopOpen: (): never => {
        throw new Error("decode loop: refused for the test");
      },
    } as Partial<NativeLoopAddon> as NativeLoopAddon; // createContextWithLoop needs no more of it
    const narrow = await createContextWithLoop(refusing, () => model.createContext({ contextSize: 256, sequences: 1, threads: 1 }), 1);
    try {
      assert.equal(narrow.loop, undefined);
      assert.match(narrow.why ?? "", /the native loop could not open on this context: decode loop: refused for the test/);
      const fallback = new DecodeLoop();
      const tokens = await collect(fallback.tokens(narrow.sequences[0] as LlamaContextSequence, prompt(), 0, GREEDY, 8));
      assert.equal(tokens.length, 8, "the context still decodes through evaluate");
    } finally {
      await narrow.context.dispose();
    }
  });

  test("a context freed under a running generation (no close first) ends it with an error; the loop takes no more", async () => {
    const doomed = await createContextWithLoop(nativeLoopAddon(), () => model.createContext({ contextSize: 256, sequences: 1, threads: 1 }), 1);
    assert.ok(doomed.loop !== undefined, doomed.why ?? "");
    const [only] = doomed.sequences as [LlamaContextSequence];
    const tokens = doomed.loop.tokens(only, prompt(), 0, GREEDY, 200);
    await tokens.next();
    await doomed.context.dispose(); // llama_free's hook halts the loop first
    await assert.rejects(async () => {
      for (let index = 0; index < 200; index++) await tokens.next();
    }, /could not decode/);
    await assert.rejects(async () => doomed.loop!.tokens(only, prompt(), 0, GREEDY, 4).next(), /halted/);
    doomed.loop.close();
  });

  test("closing the loop under a running generation ends it with an error, and the context can be freed", async () => {
    const tokens = decoder.tokens(seq(0), prompt(), 0, GREEDY, 400);
    await tokens.next();
    decoder.close();
    await assert.rejects(async () => {
      for (let index = 0; index < 400; index++) await tokens.next();
    }, /closed/);
    await assert.rejects(async () => decoder.tokens(seq(1), prompt(), 0, GREEDY, 4).next(), /closed/);
  });
});

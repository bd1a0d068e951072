/**
 * The lockstep decode loop on a real model (stories260K, greedy): generations running
 * together produce exactly what each produces alone, a reader that stops reading holds its
 * generation a bounded distance ahead, and ending an iteration leaves no decode running on
 * its sequence (so the sequence can be handed to the next request).
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";
import type { LlamaContext, LlamaModel, Token } from "node-llama-cpp";
import { DecodeLoop } from "../../src/backends/local/decode-loop.js";
import { STORIES_260K } from "../helpers/models.js";
import { testLlama } from "../helpers/parley.js";

let model: LlamaModel;
let context: LlamaContext;
before(async () => {
  model = await (await testLlama()).loadModel({ modelPath: STORIES_260K });
  context = await model.createContext({ contextSize: 512, sequences: 4, threads: 1 });
});
after(async () => {
  await context.dispose();
  await model.dispose();
});

const PROMPTS = ["Once upon a time", "The little dog", "Lily liked to", "One day, a big"];

async function collect(iterator: AsyncIterable<Token>, count: number): Promise<Token[]> {
  const tokens: Token[] = [];
  for await (const token of iterator) {
    tokens.push(token);
    if (tokens.length >= count) break;
  }
  return tokens;
}

test("four generations in lockstep produce, token for token, what each produces alone", async () => {
  const alone: Token[][] = [];
  for (const prompt of PROMPTS) {
    const sequence = context.getSequence();
    try {
      alone.push(await collect(new DecodeLoop().tokens(sequence, model.tokenize(prompt), { temperature: 0 }, 24), 24));
    } finally {
      sequence.dispose();
    }
  }
  const loop = new DecodeLoop();
  const sequences = PROMPTS.map(() => context.getSequence());
  try {
    const together = await Promise.all(PROMPTS.map((prompt, index) => collect(loop.tokens(sequences[index]!, model.tokenize(prompt), { temperature: 0 }, 24), 24)));
    assert.deepEqual(together, alone);
    assert.equal(loop.active, 0, "every generation left the loop");
  } finally {
    for (const sequence of sequences) sequence.dispose();
  }
});

test("a reader that stops reading holds its generation a few tokens ahead, not to its limit", async () => {
  const loop = new DecodeLoop();
  const sequence = context.getSequence();
  try {
    const prompt = model.tokenize("Once upon a time");
    const tokens = loop.tokens(sequence, prompt, { temperature: 0 }, 200);
    await tokens.next(); // one token read, then nothing
    await sleep(300);
    const evaluated = sequence.nextTokenIndex;
    assert.ok(evaluated <= prompt.length + 10, `${evaluated - prompt.length} tokens evaluated past the prompt while the reader waited`);
    await sleep(100);
    assert.equal(sequence.nextTokenIndex, evaluated, "it stays there");
    await tokens.return?.();
  } finally {
    sequence.dispose();
  }
});

test("ending an iteration waits for its decode in flight: nothing is evaluated on the sequence afterwards", async () => {
  const loop = new DecodeLoop();
  const sequence = context.getSequence();
  const other = context.getSequence();
  try {
    const running = loop.tokens(other, model.tokenize("The little dog"), { temperature: 0 }, 200);
    const tokens = loop.tokens(sequence, model.tokenize("Once upon a time"), { temperature: 0 }, 200);
    await Promise.all([tokens.next(), running.next()]);
    await tokens.next();
    await tokens.return?.();
    const evaluated = sequence.nextTokenIndex;
    for (let index = 0; index < 5; index++) await running.next(); // the loop steps on without it
    assert.equal(sequence.nextTokenIndex, evaluated);
    await running.return?.();
  } finally {
    sequence.dispose();
    other.dispose();
  }
});

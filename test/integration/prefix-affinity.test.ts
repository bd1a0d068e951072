/**
 * Prefix affinity across the sequence pool: a follow-up turn goes to the sequence that
 * served the conversation so far, even after another conversation used the pool, and
 * `usage.prompt_tokens_details.cached_tokens` reports the reused prompt tokens.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { STORIES_260K } from "../helpers/models.js";
import { postChat, startParley, type RunningParley } from "../helpers/parley.js";

interface Completion {
  choices: Array<{ message: { content: string } }>;
  usage: { prompt_tokens: number; prompt_tokens_details?: { cached_tokens: number } };
}

let parley: RunningParley;
before(async () => {
  parley = await startParley({ modelPath: STORIES_260K, parallel: 3 });
});
after(() => parley.close());

async function chat(messages: Array<{ role: string; content: string }>): Promise<Completion> {
  const response = await postChat(parley, { model: "test-model", messages, max_tokens: 16, temperature: 0 });
  assert.equal(response.status, 200);
  return (await response.json()) as Completion;
}

test("a follow-up turn reuses its conversation's cache after other conversations ran", async () => {
  const history = [{ role: "user", content: "Once upon a time there was a little girl named Lily who loved to play in the park with her dog." }];
  const first = await chat(history);
  assert.equal(first.usage.prompt_tokens_details?.cached_tokens, 0);
  // Two other conversations take turns on the pool in between.
  await chat([{ role: "user", content: "Tom had a big red ball." }]);
  await chat([{ role: "user", content: "The sun was hot and the cat was sleepy." }]);
  const followUp = await chat([...history, { role: "assistant", content: first.choices[0]!.message.content }, { role: "user", content: "What happened next?" }]);
  const cached = followUp.usage.prompt_tokens_details?.cached_tokens ?? 0;
  assert.ok(cached >= first.usage.prompt_tokens - 1, `reused ${cached} of the first turn's ${first.usage.prompt_tokens} prompt tokens`);
  assert.ok(cached < followUp.usage.prompt_tokens);
});

test("an unrelated prompt does not take over a conversation's sequence when another is free", async () => {
  const history = [{ role: "user", content: "A small bird lived in a tall tree near the river and sang every morning." }];
  const first = await chat(history);
  await chat([{ role: "user", content: "Ben liked to draw." }]);
  const followUp = await chat([...history, { role: "assistant", content: first.choices[0]!.message.content }, { role: "user", content: "And then?" }]);
  assert.ok((followUp.usage.prompt_tokens_details?.cached_tokens ?? 0) >= first.usage.prompt_tokens - 1);
});

/**
 * Scenarios run by test/integration/decode-loop-slow-steps.test.ts in a child process, under
 * the slow-decode shim (test/fixtures/native/slow-decode.c, LD_PRELOAD), which makes every
 * step of Parley's native loop sleep SLOW_DECODE_MS first. Each prints one line of JSON.
 *
 *   close-racing-free: with one libuv threadpool thread kept busy, a context's dispose is
 *     queued, then its loop is closed while the loop is inside a step, so that
 *     node-llama-cpp's llama_free runs on the threadpool while close() waits for that step.
 *     The free must wait too. Prints {"done":true} when nothing crashed.
 *   cancel-mid-step: two generations run; one is cancelled (its iterator returned) while a
 *     step is under way. Prints how many tokens the other generation had received when the
 *     cancel finished: the cancelled generation's END must not wait for a further step.
 */
import { pbkdf2 } from "node:crypto";
import { setImmediate as tick, setTimeout as sleep } from "node:timers/promises";
import { openEngine } from "../../src/backends/local/engine.js";
import { nativeLoopAddon } from "../../src/backends/local/llama-tuning.js";
import { createContextWithLoop } from "../../src/backends/local/native-decode-loop.js";
import { GREEDY } from "../../src/backends/local/sequence-decoder.js";
import { STORIES_260K } from "./models.js";

const scenario = process.argv[2];
const stepMs = process.argv[3] ?? "600";
const { llama } = await openEngine({});
const model = await llama.loadModel({ modelPath: STORIES_260K });
const { context, sequences, loop } = await createContextWithLoop(
  nativeLoopAddon(),
  () => model.createContext({ contextSize: 256, sequences: 2, threads: 1 }),
  2,
);
if (loop === undefined) throw new Error("the native loop did not open");
const prompt = model.tokenize("Once upon a time");
process.env.SLOW_DECODE_MS = stepMs; // read by the shim at every step from now on

if (scenario === "close-racing-free") {
  const tokens = loop.tokens(sequences[0]!, prompt, 0, GREEDY, 50);
  const first = tokens.next().catch(() => undefined); // starts the generation; close() ends it
  await sleep(20); // the loop is inside its first step
  // Hold the only threadpool thread for a few hundred milliseconds (well under the step): the
  // dispose's llama_free then runs while close() below waits for the slow step.
  pbkdf2("parley", "salt", 300_000, 32, "sha256", () => undefined);
  const disposed = context.dispose();
  await sleep(30);
  loop.close();
  await disposed;
  await first;
  console.log(JSON.stringify({ done: true }));
} else if (scenario === "cancel-mid-step") {
  const kept = loop.tokens(sequences[0]!, prompt, 0, GREEDY, 50);
  const cancelled = loop.tokens(sequences[1]!, prompt, 0, GREEDY, 50);
  let received = 0;
  const reading = (async () => {
    for await (const token of kept) {
      void token;
      received += 1;
      if (received === 6) break;
    }
  })();
  await cancelled.next(); // it has a token; the next step (both sequences) is under way
  await sleep(Number(stepMs) / 3); // well inside that step
  const before = received;
  await cancelled.return?.();
  await tick(); // anything delivered with the END has been read by now
  console.log(JSON.stringify({ before, afterCancel: received }));
  await reading;
  loop.close();
  await context.dispose();
} else {
  throw new Error(`unknown scenario '${scenario}'`);
}
await model.dispose();

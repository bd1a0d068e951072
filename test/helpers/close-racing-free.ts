/**
 * Run by test/integration/decode-loop-free-race.test.ts in a child process, under the
 * slow-decode shim (LD_PRELOAD) with one libuv threadpool thread: a context's dispose is
 * queued behind a busy threadpool, then its decode loop is closed while the loop is inside a
 * long step, so that node-llama-cpp's llama_free runs on the threadpool while close() waits
 * for that step. The free must wait too. Prints "done" when nothing crashed.
 */
import { pbkdf2 } from "node:crypto";
import { openEngine } from "../../src/backends/local/engine.js";
import { nativeLoopAddon } from "../../src/backends/local/llama-tuning.js";
import { createContextWithLoop } from "../../src/backends/local/native-decode-loop.js";
import { STORIES_260K } from "./models.js";

const STEP_MS = process.argv[2] ?? "1500";
const { llama } = await openEngine({});
const model = await llama.loadModel({ modelPath: STORIES_260K });
const { context, sequences, loop } = await createContextWithLoop(
  nativeLoopAddon(),
  () => model.createContext({ contextSize: 256, sequences: 1, threads: 1 }),
  1,
);
if (loop === undefined) throw new Error("the native loop did not open");
const greedy = { temperature: 0, topP: 1, seed: undefined, presencePenalty: 0, frequencyPenalty: 0 };
process.env.SLOW_DECODE_MS = STEP_MS; // every step of the loop sleeps this long first
const tokens = loop.tokens(sequences[0]!, model.tokenize("Once upon a time"), 0, greedy, 50);
const first = tokens.next().catch(() => undefined); // starts the generation; close() ends it
await new Promise((resolve) => setTimeout(resolve, 20)); // the loop is inside its first step
// Hold the only threadpool thread for a few hundred milliseconds: the dispose's llama_free
// then runs while close() below waits for the slow step.
pbkdf2("parley", "salt", 300_000, 32, "sha256", () => undefined);
const disposed = context.dispose();
await new Promise((resolve) => setTimeout(resolve, 30));
loop.close();
await disposed;
await first;
await model.dispose();
console.log("done");

/**
 * A child process for test/integration/parley-kernels.test.ts: loads a model with one CPU
 * kernel variant (a process keeps the first it loads), decodes one prompt per sequence, all
 * together in Parley's native loop (so the matrix products see several columns) and each
 * greedily, and prints `{ "loaded": "parley", "tokens": [[...], ...] }`.
 *
 *   node --import tsx greedy-tokens-child.ts '{"variant":"parley","modelPath":"m.gguf","prompts":["…"],"tokens":24}'
 */
import { LlamaLogLevel, type Token } from "node-llama-cpp";
import { openEngine } from "../../src/backends/local/engine.js";
import { nativeLoopAddon } from "../../src/backends/local/llama-tuning.js";
import { createContextWithLoop } from "../../src/backends/local/native-decode-loop.js";
import { GREEDY } from "../../src/backends/local/sequence-decoder.js";

interface Request {
  readonly variant: string | null;
  readonly modelPath: string;
  readonly prompts: readonly string[];
  readonly tokens: number;
}

const request = JSON.parse(process.argv[2] ?? "{}") as Request;
const { llama, tuning } = await openEngine({ cpuKernels: request.variant ?? undefined, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: request.modelPath });
const { context, sequences, loop } = await createContextWithLoop(
  nativeLoopAddon(),
  () => model.createContext({ contextSize: 512, sequences: request.prompts.length, threads: 2 }),
  request.prompts.length,
);
if (loop === undefined) throw new Error("the native decode loop did not open");
const tokens = await Promise.all(
  sequences.map(async (sequence, index) => {
    const out: Token[] = [];
    for await (const token of loop.tokens(sequence, model.tokenize(request.prompts[index] ?? ""), 0, GREEDY, request.tokens)) out.push(token);
    return out;
  }),
);
loop.close();
await context.dispose();
await model.dispose();
process.stdout.write(`${JSON.stringify({ loaded: tuning.cpuKernelsLoaded, tokens })}\n`);
process.exit(0);

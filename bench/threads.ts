/**
 * Measures node-llama-cpp's decode time per token at each thread count, for models of
 * very different sizes, to choose Parley's default thread count (see README "Threads").
 *
 *   node --import tsx bench/threads.ts MODEL.gguf [MODEL.gguf ...]
 *
 * Each (model, threads) cell: a fresh context, a 32-token prompt, then 64 greedy tokens;
 * 3 rounds (ROUNDS), alternating thread counts, median ms/token reported; THREADS=1,2,3,4 and TOKENS=64 by default.
 * The engine runs as Parley runs it (its tuning addon loaded); THREADPOOL=off measures
 * node-llama-cpp's own threading instead, CPU_KERNELS=haswell a given kernel variant.
 */
import path from "node:path";
import { LlamaLogLevel } from "node-llama-cpp";
import { openEngine } from "../src/backends/local/engine.js";

const THREADS = (process.env.THREADS ?? "1,2,3,4").split(",").map(Number);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const TOKENS = Number(process.env.TOKENS ?? 64);

const { llama, tuning } = await openEngine({
  logLevel: LlamaLogLevel.error,
  threadpool: process.env.THREADPOOL !== "off",
  cpuKernels: process.env.CPU_KERNELS,
});
console.log(`cpuMathCores ${llama.cpuMathCores}, maxThreads ${llama.maxThreads}, tuning ${JSON.stringify(tuning)}`);
const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN;

for (const file of process.argv.slice(2)) {
  const model = await llama.loadModel({ modelPath: file });
  const prompt = model.tokenize("Once upon a time there was a little robot who wanted to learn how to sing songs for everyone in town.").slice(0, 32);
  const samples = new Map<number, number[]>(THREADS.map((threads) => [threads, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const threads of THREADS) {
      const context = await model.createContext({ contextSize: 256, threads });
      const sequence = context.getSequence();
      let count = 0;
      let start = 0;
      // yieldEogToken: a random-weight model may sample EOG; keep decoding through it.
      for await (const _token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
        if (count === 0) start = performance.now(); // decode steps only, after the prompt
        count += 1;
        if (count > TOKENS) break;
      }
      // count - 1 decode steps happened after the first token; EOG may end a run early.
      if (count > 1) samples.get(threads)!.push((performance.now() - start) / (count - 1));
      await context.dispose();
    }
  }
  const cells = THREADS.map((threads) => `${threads}t ${median(samples.get(threads)!).toFixed(2)} ms`).join(" | ");
  console.log(`${path.basename(file)} (${(model.size / 1e6).toFixed(1)} MB): ${cells}`);
  await model.dispose();
}

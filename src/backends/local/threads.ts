/**
 * The engine's default thread count, from measurements on the 2-core machines Parley is
 * built on (bench/results/threads.md, `npm run bench:threads`).
 *
 * Through node-llama-cpp 3.21.1 a decode step on 2 threads carries a fixed cost of about
 * 8–19 ms over 1 thread (its addon attaches no persistent threadpool, so ggml starts
 * threads for every graph), while the arithmetic only speeds up ~1.25–1.6×. One thread
 * therefore wins until a step's arithmetic is large: measured, 1 thread is 55× faster on
 * stories260K, 12% faster on Qwen2-0.5B q8_0 (525 MB), even on Qwen2-0.5B f16 (988 MB),
 * and 37% slower on Qwen2-7B q8_0 (8.1 GB). Hence: 1 thread below 1 GiB of weights, else
 * every core the library counts for math (never more: oversubscribing 2 cores with 3
 * threads made steps 10–30× slower still).
 */

/** Weights below this size decode fastest on one thread. */
export const SINGLE_THREAD_MODEL_BYTES = 1024 ** 3;

export function defaultThreads(modelBytes: number, cpuMathCores: number): number {
  return modelBytes < SINGLE_THREAD_MODEL_BYTES ? 1 : Math.max(1, cpuMathCores);
}

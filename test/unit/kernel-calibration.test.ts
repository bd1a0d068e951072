import assert from "node:assert/strict";
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import type { CpuInfo } from "../../src/backends/local/cpu-kernels.js";
import {
  cacheKey,
  candidateVariants,
  pickVariant,
  referenceCost,
  resolveCpuKernels,
  type Measurement,
} from "../../src/backends/local/kernel-calibration.js";

const cpu = (flags: string): CpuInfo => ({ vendor: "AuthenticAMD", flags: new Set(flags.split(" ")) });
const ZEN5 = cpu("avx avx2 fma f16c bmi2 avx512f avx_vnni");
const measurement = (loaded: string | null, prefillMs: number, stepMs: number): Measurement => ({ requested: loaded, loaded, threads: 2, prefillMs, stepMs, loop: "native" });

test("candidates: ggml's choice first, then the AVX2-class variants this CPU runs", () => {
  assert.deepEqual(candidateVariants(ZEN5), [null, "haswell", "alderlake"]);
  assert.deepEqual(candidateVariants(cpu("avx avx2 fma f16c bmi2")), [null, "haswell"]);
  assert.deepEqual(candidateVariants(cpu("sse4_2 avx")), [null]);
  assert.deepEqual(candidateVariants(ZEN5, true), [null, "haswell", "alderlake", "parley"], "Parley's kernels where they were built");
});

test("the reference workload weighs prefill by parallel requests and decode by completion tokens", () => {
  // 128-token prompts are 2 timed 64-token prompts; 256 decode steps.
  assert.equal(referenceCost({ prefillMs: 10, stepMs: 1 }, 1), 2 * 10 + 256);
  assert.equal(referenceCost({ prefillMs: 10, stepMs: 1 }, 8), 8 * 2 * 10 + 256);
});

test("the cheapest variant wins, for the measured Qwen2-0.5B trade-off on both sides", () => {
  // Calibrations measured on the 2-core AMD EPYC: zen4 prefills faster, the AVX2 kernels decode batches faster.
  const one = [measurement("zen4", 189.1, 18.58), measurement("haswell", 228.4, 18.71), measurement("alderlake", 205.0, 18.9)];
  assert.equal(pickVariant(one, 1), "zen4");
  const four = [measurement("zen4", 191.9, 69.59), measurement("haswell", 216.9, 53.76), measurement("alderlake", 197.2, 51.93)];
  assert.equal(pickVariant(four, 4), "alderlake");
  const eight = [measurement("zen4", 176.3, 71.42), measurement("haswell", 218.9, 61.93), measurement("alderlake", 207.8, 66.46)];
  assert.equal(pickVariant(eight, 8), "haswell");
  assert.equal(pickVariant([measurement("zen4", 1, 1), measurement("haswell", 1, 1)], 1), "zen4", "a tie keeps the earlier");
  assert.equal(pickVariant([measurement(null, 1, 1), measurement("haswell", Number.NaN, 1)], 1), undefined);
  assert.equal(pickVariant([], 1), undefined);
});

test("ggml's own choice is kept when it ties the cheapest within the measuring noise (3%)", () => {
  const ggml = (loaded: string, prefillMs: number, stepMs: number): Measurement => ({ ...measurement(loaded, prefillMs, stepMs), requested: null });
  // Qwen2-0.5B at --parallel 1 (native loop, 2 threads): zen4 costs 2.3% more than alderlake
  // here, but over HTTP it decoded one stream 2.3% faster (55.78 against 54.50 tokens/s).
  const one = [ggml("zen4", 193.0, 17.99), measurement("haswell", 232.2, 17.55), measurement("alderlake", 211.2, 17.4)];
  assert.equal(pickVariant(one, 1), "zen4");
  // At --parallel 8 alderlake's 15% lead is no tie.
  const eight = [ggml("zen4", 193.8, 68.04), measurement("haswell", 225.1, 58.56), measurement("alderlake", 224.4, 57.09)];
  assert.equal(pickVariant(eight, 8), "alderlake");
  // A variant a hair cheaper does not displace ggml's choice; without a ggml measurement, the cheapest wins.
  assert.equal(pickVariant([ggml("zen4", 100, 10), measurement("haswell", 99, 9.9)], 1), "zen4");
  assert.equal(pickVariant([measurement("zen4", 100, 10), measurement("haswell", 99, 9.9)], 1), "haswell");
});

test("the cache key changes with the model file, threads, parallel, the threadpool, the decode loop and the engine", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "parley-key-"));
  try {
    const modelPath = path.join(dir, "m.gguf");
    writeFileSync(modelPath, "GGUF");
    const base = { cpu: ZEN5, engineVersion: "3.21.1", modelPath, threads: undefined, parallel: 1, threadpool: true, nativeLoop: true, parleyKernels: null };
    const key = cacheKey(base);
    assert.equal(cacheKey(base), key);
    assert.notEqual(cacheKey({ ...base, parallel: 4 }), key);
    assert.notEqual(cacheKey({ ...base, threads: 2 }), key);
    assert.notEqual(cacheKey({ ...base, engineVersion: "3.22.0" }), key);
    assert.notEqual(cacheKey({ ...base, threadpool: false }), key);
    assert.notEqual(cacheKey({ ...base, nativeLoop: false }), key);
    assert.notEqual(cacheKey({ ...base, parleyKernels: "stamp-a" }), key, "Parley's kernels, once built, are a new candidate");
    assert.notEqual(cacheKey({ ...base, parleyKernels: "stamp-b" }), cacheKey({ ...base, parleyKernels: "stamp-a" }), "a rebuild is measured again");
    utimesSync(modelPath, new Date(), new Date(Date.now() + 10_000));
    assert.notEqual(cacheKey(base), key, "a rewritten model file is measured again");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("resolve: a named variant and ggml are taken as given, a cached choice is reused, nothing is measured", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "parley-resolve-"));
  try {
    const modelPath = path.join(dir, "m.gguf");
    writeFileSync(modelPath, "GGUF");
    const common = { cpu: ZEN5, engineVersion: "3.21.1", modelPath, threads: undefined, parallel: 2, threadpool: true, nativeLoop: true, parleyKernels: null, cacheDir: dir, tunable: true };
    const measuring = () => assert.fail("nothing should be measured");
    assert.deepEqual(await resolveCpuKernels({ ...common, requested: "haswell", onMeasuring: measuring }), { variant: "haswell", reason: "--cpu-kernels" });
    assert.equal((await resolveCpuKernels({ ...common, requested: "ggml", onMeasuring: measuring })).variant, undefined);
    assert.match((await resolveCpuKernels({ ...common, requested: undefined, tunable: false, onMeasuring: measuring })).reason, /not loaded/);
    const noAvx2 = await resolveCpuKernels({ ...common, cpu: cpu("sse4_2 avx"), requested: undefined, onMeasuring: measuring });
    assert.deepEqual(noAvx2, { variant: undefined, reason: "ggml's choice (the only candidate on this CPU)" });

    const calibration = { variant: "alderlake", measurements: [measurement("alderlake", 1, 1)], measuredAt: "2026-11-25T00:00:00.000Z" };
    writeFileSync(path.join(dir, "cpu-kernels.json"), JSON.stringify({ version: 1, entries: { [cacheKey(common)]: calibration } }));
    const cached = await resolveCpuKernels({ ...common, requested: undefined, onMeasuring: measuring });
    assert.equal(cached.variant, "alderlake");
    assert.match(cached.reason, /cached in .*cpu-kernels\.json/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

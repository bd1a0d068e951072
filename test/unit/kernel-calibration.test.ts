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
const measurement = (loaded: string | null, prefillMs: number, stepMs: number): Measurement => ({ requested: loaded, loaded, threads: 2, prefillMs, stepMs });

test("candidates: ggml's choice first, then the AVX2-class variants this CPU runs", () => {
  assert.deepEqual(candidateVariants(ZEN5), [null, "haswell", "alderlake"]);
  assert.deepEqual(candidateVariants(cpu("avx avx2 fma f16c bmi2")), [null, "haswell"]);
  assert.deepEqual(candidateVariants(cpu("sse4_2 avx")), [null]);
});

test("the reference workload weighs prefill by parallel requests and decode by completion tokens", () => {
  // 256-token prompts are 4 timed 64-token prompts; 128 decode steps.
  assert.equal(referenceCost({ prefillMs: 10, stepMs: 1 }, 1), 4 * 10 + 128);
  assert.equal(referenceCost({ prefillMs: 10, stepMs: 1 }, 8), 8 * 4 * 10 + 128);
});

test("the cheapest variant wins, for the measured Qwen2-0.5B trade-off on both sides", () => {
  // From docs/engine.md: zen4 prefills faster, the AVX2 kernels decode batches faster.
  const one = [measurement("zen4", 173, 15.8), measurement("haswell", 216, 16.2), measurement("alderlake", 196, 16.1)];
  assert.equal(pickVariant(one, 1), "zen4");
  const four = [measurement("zen4", 173, 64), measurement("haswell", 216, 51.4), measurement("alderlake", 196, 52.3)];
  assert.equal(pickVariant(four, 4), "alderlake");
  assert.equal(pickVariant([measurement("zen4", 1, 1), measurement("haswell", 1, 1)], 1), "zen4", "a tie keeps the earlier");
  assert.equal(pickVariant([measurement(null, 1, 1), measurement("haswell", Number.NaN, 1)], 1), undefined);
  assert.equal(pickVariant([], 1), undefined);
});

test("the cache key changes with the model file, threads and parallel", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "parley-key-"));
  try {
    const modelPath = path.join(dir, "m.gguf");
    writeFileSync(modelPath, "GGUF");
    const base = { cpu: ZEN5, engineVersion: "3.21.1", modelPath, threads: undefined, parallel: 1 };
    const key = cacheKey(base);
    assert.equal(cacheKey(base), key);
    assert.notEqual(cacheKey({ ...base, parallel: 4 }), key);
    assert.notEqual(cacheKey({ ...base, threads: 2 }), key);
    assert.notEqual(cacheKey({ ...base, engineVersion: "3.22.0" }), key);
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
    const common = { cpu: ZEN5, engineVersion: "3.21.1", modelPath, threads: undefined, parallel: 2, cacheDir: dir, tunable: true };
    const measuring = () => assert.fail("nothing should be measured");
    assert.deepEqual(await resolveCpuKernels({ ...common, requested: "haswell", onMeasuring: measuring }), { variant: "haswell", reason: "--cpu-kernels" });
    assert.equal((await resolveCpuKernels({ ...common, requested: "ggml", onMeasuring: measuring })).variant, undefined);
    assert.match((await resolveCpuKernels({ ...common, requested: undefined, tunable: false, onMeasuring: measuring })).reason, /not loaded/);

    const calibration = { variant: "alderlake", measurements: [measurement("alderlake", 1, 1)], measuredAt: "2026-11-25T00:00:00.000Z" };
    writeFileSync(path.join(dir, "cpu-kernels.json"), JSON.stringify({ version: 1, entries: { [cacheKey(common)]: calibration } }));
    const cached = await resolveCpuKernels({ ...common, requested: undefined, onMeasuring: measuring });
    assert.equal(cached.variant, "alderlake");
    assert.match(cached.reason, /cached in .*cpu-kernels\.json/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

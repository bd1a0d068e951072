import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { pickFlashAttention, resolveFlashAttention } from "../../src/backends/local/attention-calibration.js";
import { referenceCost, type Measurement } from "../../src/backends/local/kernel-calibration.js";

/** A measurement with steps timed at 12 and 74 tokens a sequence, as calibrate-kernels.ts times them. */
const timed = (prefillMs: number, stepMs: number, deepStepMs: number): Measurement => ({
  requested: "haswell",
  loaded: "haswell",
  threads: 1,
  prefillMs,
  stepMs,
  stepDepth: 12,
  deepStepMs,
  deepStepDepth: 74,
  loop: "native",
});

test("with steps timed at two depths, a step's cost is extrapolated linearly to the reference turn's depths", () => {
  // The reference turn decodes 256 tokens from 128 held: its mean step holds 256 tokens.
  const measurement = timed(10, 1, 1 + 62 * 0.01);
  assert.ok(Math.abs(referenceCost(measurement, 1) - (2 * 10 + 256 * (1 + 0.01 * (256 - 12)))) < 1e-9);
  // Without a deep timing (or with one no deeper), every step costs the timed one.
  assert.equal(referenceCost({ prefillMs: 10, stepMs: 1 }, 1), 2 * 10 + 256);
  assert.equal(referenceCost({ ...measurement, deepStepDepth: 12 }, 1), 2 * 10 + 256);
  // A deeper step timed cheaper is noise: the step is not extrapolated below the shallow one.
  assert.equal(referenceCost(timed(10, 1, 0.5), 1), 2 * 10 + 256);
});

test("flash attention goes off only on a clear win at the reference turn's depths", () => {
  // stories260K at --parallel 4, 1 thread (2-core AMD EPYC): the flash path is twice as fast
  // at 12 tokens a sequence, but grows 6 µs a step per cached token; the plain path's window is
  // 256 tokens at both depths, so it looks flat (its 0.451 → 0.418 ms is noise, taken as flat).
  const on = timed(1.49, 0.223, 0.59);
  const off = timed(3.74, 0.451, 0.418);
  assert.equal(pickFlashAttention(on, off, 4), false);
  // Shallow timings alone would have kept it on.
  const shallow = ({ deepStepMs, deepStepDepth, ...rest }: Measurement): Measurement => rest;
  assert.equal(pickFlashAttention(shallow(on), shallow(off), 4), "auto");
  // Short of a 25% win, llama.cpp keeps its own choice: the Qwen2-7B-shaped q8_0 at --parallel 4
  // (one child per path, 2 threads) timed the plain path 184 ms at 12 tokens and 160 ms at 74,
  // the flash path 172 ms and 181 ms. Costed as timed, the plain path came out 7% cheaper.
  const sevenB = { on: timed(1792, 172.41, 180.63), off: timed(1888, 183.89, 160.25) };
  assert.ok(referenceCost(sevenB.off, 4) < referenceCost(sevenB.on, 4) * 0.95);
  assert.equal(pickFlashAttention(sevenB.on, sevenB.off, 4), "auto");
  assert.equal(pickFlashAttention(timed(10, 5, 5.2), timed(10, 4.9, 5.1), 4), "auto");
  assert.equal(pickFlashAttention(timed(10, 5, 5.2), timed(10, 5.5, 6), 4), "auto");
  assert.equal(pickFlashAttention(timed(10, 5, 5.2), timed(10, 3.5, 3.6), 4), false, "a 30% win");
});

test("a forced setting is used as given, without measuring", async () => {
  const cacheDir = mkdtempSync(path.join(os.tmpdir(), "parley-attention-"));
  try {
    const options = {
      cpu: { vendor: "AuthenticAMD", flags: new Set(["avx2"]) },
      engineVersion: "3.21.1",
      modelPath: path.join(cacheDir, "missing.gguf"),
      threads: 1,
      parallel: 1,
      threadpool: true,
      nativeLoop: true,
      parleyKernels: null,
      variant: undefined,
      cacheDir,
      onMeasuring: () => assert.fail("a forced setting is not measured"),
    };
    assert.deepEqual(await resolveFlashAttention({ ...options, requested: "on" }), { flashAttention: true, reason: "--flash-attention" });
    assert.deepEqual(await resolveFlashAttention({ ...options, requested: "off" }), { flashAttention: false, reason: "--flash-attention" });
    // A model that cannot be measured keeps llama.cpp's choice and says why.
    const failed = await resolveFlashAttention({ ...options, requested: "auto", onMeasuring: () => undefined });
    assert.equal(failed.flashAttention, "auto");
    assert.match(failed.reason, /^llama\.cpp's choice: flash attention could not be measured/);
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
});

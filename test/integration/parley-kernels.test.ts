/**
 * Parley's own CPU kernels (native/ggml-cpu/, scripts/build-cpu-kernels.mjs): the kernel, for
 * Q8_0 and Q5_0 weights, against a plain reference; the build present wherever this machine
 * can make it; and Q8_0 and Q5_0 models decoding the same greedy tokens with Parley's build as
 * with llama.cpp's own kernels (every sequence in one batch, so the products see several
 * columns).
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { readCpuInfo } from "../../src/backends/local/cpu-kernels.js";
import { parleyKernels } from "../../src/backends/local/parley-kernels.js";
import { tinyQwen2 } from "../helpers/models.js";

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CHECK_SOURCE = path.join(ROOT, "test/fixtures/native/q8-0-gemm-check.cpp");
const CHILD = path.join(ROOT, "test/helpers/greedy-tokens-child.ts");

// What the kernel needs (q8_0-gemm.inc), and what the build needs besides (build-cpu-kernels.mjs).
const KERNEL_FLAGS = ["f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"];
const BUILD_FLAGS = [...KERNEL_FLAGS, "avx2", "fma", "bmi2", "avx512cd", "avx512vbmi", "avx512_bf16"];
const cpu = readCpuInfo();
const lacking = (flags: readonly string[]): string[] => flags.filter((flag) => !cpu.flags.has(flag));

function has(command: string): boolean {
  try {
    execFileSync(command, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
const cxx = process.env.CXX || "c++";

test("Parley's Q8_0 and Q5_0 kernel matches a plain reference on every path", async (t) => {
  if (lacking(KERNEL_FLAGS).length > 0) return t.skip(`this CPU lacks ${lacking(KERNEL_FLAGS).join(", ")}`);
  if (!has(cxx)) return t.skip(`no C++ compiler (${cxx})`);
  const dir = mkdtempSync(path.join(os.tmpdir(), "parley-q8-check-"));
  try {
    const binary = path.join(dir, "check");
    await run(cxx, ["-O2", "-std=c++17", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-o", binary, CHECK_SOURCE]);
    const { stdout } = await run(binary);
    assert.match(stdout, /^ok \d+/, stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("npm run build made Parley's kernels wherever this machine can", (t) => {
  const missing = [...lacking(BUILD_FLAGS).map((flag) => `CPU flag ${flag}`), ...["cmake", cxx, process.env.CC || "cc", "git", "tar"].filter((tool) => !has(tool))];
  if (missing.length > 0) return t.skip(`cannot be built here: no ${missing.join(", ")}`);
  assert.equal(parleyKernels().reason, null);
  assert.notEqual(parleyKernels().file, null);
});

for (const type of ["q8_0", "q5_0"] as const) {
  test(`a ${type.toUpperCase()} model decodes the same greedy tokens with Parley's kernels as with llama.cpp's`, async (t) => {
    if (parleyKernels().file === null) return t.skip(`Parley's kernels are ${parleyKernels().reason ?? "not built"}`);
    const modelPath = await tinyQwen2(type);
    const request = {
      modelPath,
      prompts: ["The keeper of the lighthouse", "Once upon a time", "A list of prime numbers:", "def fibonacci(n):", "Dear committee,"],
      tokens: 24,
    };
    const decode = async (variant: string): Promise<{ loaded: string | null; tokens: number[][] }> => {
      const { stdout } = await run(process.execPath, ["--import", "tsx", CHILD, JSON.stringify({ ...request, variant })], { cwd: ROOT, timeout: 120_000 });
      return JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as { loaded: string | null; tokens: number[][] };
    };
    const parley = await decode("parley");
    // An explicit variant, not ggml's choice: kernels that add in another order may break a
    // near-tie differently (zen4 and alderlake do on a 0.5B model); zen4 runs wherever
    // Parley's build does.
    const reference = await decode("zen4");
    assert.equal(parley.loaded, "parley");
    assert.equal(reference.loaded, "zen4");
    assert.equal(parley.tokens.length, request.prompts.length);
    for (const tokens of parley.tokens) assert.equal(tokens.length, request.tokens);
    assert.deepEqual(parley.tokens, reference.tokens);
  });
}

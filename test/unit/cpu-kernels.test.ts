import assert from "node:assert/strict";
import { test } from "node:test";
import { chooseCpuKernels, readCpuInfo, type CpuInfo } from "../../src/backends/local/cpu-kernels.js";

const cpu = (vendor: string, flags: string): CpuInfo => ({ vendor, flags: new Set(flags.split(" ")) });
const ZEN5 = cpu("AuthenticAMD", "fpu sse4_2 avx avx2 fma f16c bmi2 avx512f avx512bw avx512vl avx_vnni avx512_vnni");
const ZEN4_NO_AVX_VNNI = cpu("AuthenticAMD", "avx avx2 fma f16c bmi2 avx512f avx512bw avx512vl avx512_vnni");
const ZEN3 = cpu("AuthenticAMD", "avx avx2 fma f16c bmi2");
const SAPPHIRE_RAPIDS = cpu("GenuineIntel", "avx avx2 fma f16c bmi2 avx512f avx512bw avx_vnni amx_tile");

test("an explicit --cpu-kernels is always what is asked for", () => {
  assert.equal(chooseCpuKernels("zen4", 8, ZEN5).variant, "zen4");
  assert.equal(chooseCpuKernels("haswell", 1, ZEN3).variant, "haswell");
});

test("auto keeps ggml's choice for one sequence at a time", () => {
  assert.equal(chooseCpuKernels(undefined, 1, ZEN5).variant, undefined);
});

test("auto on an AMD AVX-512 CPU decoding batches prefers the AVX2 kernels", () => {
  assert.equal(chooseCpuKernels(undefined, 4, ZEN5).variant, "alderlake");
  assert.equal(chooseCpuKernels(undefined, 8, ZEN4_NO_AVX_VNNI).variant, "haswell");
  assert.match(chooseCpuKernels(undefined, 4, ZEN5).reason, /AVX-512/);
});

test("auto leaves unmeasured CPUs to ggml", () => {
  assert.equal(chooseCpuKernels(undefined, 8, ZEN3).variant, undefined);
  assert.equal(chooseCpuKernels(undefined, 8, SAPPHIRE_RAPIDS).variant, undefined);
  assert.equal(chooseCpuKernels(undefined, 8, cpu("", "")).variant, undefined);
});

test("/proc/cpuinfo is read from its first processor", () => {
  const info = readCpuInfo("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n");
  assert.equal(info.vendor, "AuthenticAMD");
  assert.deepEqual([...info.flags], ["fpu", "avx2", "avx512f"]);
  assert.equal(readCpuInfo("").vendor, "");
});

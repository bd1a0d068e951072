/**
 * Which of the prebuilt llama.cpp's CPU kernel variants Parley loads (`--cpu-kernels`).
 *
 * ggml on its own loads the variant for the highest instruction set the CPU runs. On AMD
 * EPYCs with AVX-512 that is `zen4`, and measured there (docs/engine.md, Qwen2-0.5B q8_0,
 * 2 threads) its kernels decode batches of 4 and 8 tokens 1.2–1.3× slower than the AVX2
 * ones, while prefilling a prompt 1.15–1.3× faster and decoding one token alike:
 *
 * | variant | prefill 400 tokens | decode step, batch 1 / 4 / 8 |
 * |---|---|---|
 * | zen4 (AVX-512, ggml's choice) | 1,035 ms | 15.8 / 60.7 / 62.8 ms |
 * | alderlake (AVX2 + AVX-VNNI) | 1,205 ms | 16.1 / 47.4 / 50.1 ms |
 * | haswell (AVX2) | 1,370 ms | 16.2 / 48.1 / 53.5 ms |
 *
 * `--cpu-kernels auto` measures the variants on the served model (kernel-calibration.ts). This
 * rule is its fallback when no variant could be measured: keep ggml's choice, except where a
 * model decodes several sequences together (`--parallel` above 1) on an AMD CPU whose best
 * variant would be an AVX-512 one; there load `alderlake` (or `haswell` without AVX-VNNI).
 * Intel's AVX-512 parts are not measured, so they keep ggml's choice. A variant that fails to
 * load falls back to ggml's choice (llama-tuning.c).
 */
import { readFileSync } from "node:fs";

export interface CpuInfo {
  readonly vendor: string;
  readonly flags: ReadonlySet<string>;
}

export interface KernelChoice {
  /** The variant to load; undefined leaves the choice to ggml. */
  readonly variant: string | undefined;
  /** Why, for the start-up log. */
  readonly reason: string;
}

/** This machine's CPU, from /proc/cpuinfo (Linux); an empty description elsewhere. */
export function readCpuInfo(text?: string): CpuInfo {
  let source = text;
  if (source === undefined) {
    try {
      source = readFileSync("/proc/cpuinfo", "utf8");
    } catch {
      return { vendor: "", flags: new Set() };
    }
  }
  const field = (name: string): string => new RegExp(`^${name}\\s*:\\s*(.*)$`, "m").exec(source ?? "")?.[1]?.trim() ?? "";
  return { vendor: field("vendor_id"), flags: new Set(field("flags").split(/\s+/).filter((flag) => flag !== "")) };
}

/**
 * The AVX2-class variants this CPU runs, slowest instruction set first: `haswell` (AVX2, FMA,
 * F16C, BMI2), then `alderlake` (those plus AVX-VNNI).
 */
export function avx2Variants(cpu: CpuInfo): string[] {
  if (!["avx2", "fma", "f16c", "bmi2"].every((flag) => cpu.flags.has(flag))) return [];
  return cpu.flags.has("avx_vnni") ? ["haswell", "alderlake"] : ["haswell"];
}

/**
 * `requested`: the `--cpu-kernels` value (undefined for `auto`); `parallel`: the most
 * sequences any local model decodes together.
 */
export function chooseCpuKernels(requested: string | undefined, parallel: number, cpu: CpuInfo): KernelChoice {
  if (requested !== undefined) return { variant: requested, reason: "--cpu-kernels" };
  if (parallel <= 1) return { variant: undefined, reason: "ggml's choice (one sequence at a time)" };
  const amdAvx512 = cpu.vendor === "AuthenticAMD" && cpu.flags.has("avx512f");
  const best = avx2Variants(cpu).at(-1);
  if (!amdAvx512 || best === undefined) return { variant: undefined, reason: "ggml's choice" };
  return best === "alderlake"
    ? { variant: best, reason: "AVX2 + AVX-VNNI kernels decode batches faster than AVX-512 ones on AMD (docs/engine.md)" }
    : { variant: best, reason: "AVX2 kernels decode batches faster than AVX-512 ones on AMD (docs/engine.md)" };
}

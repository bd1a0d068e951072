/**
 * Parley's own build of ggml's CPU backend (`--cpu-kernels parley`): llama.cpp's, from the
 * release node-llama-cpp bundles, with Parley's AVX-512 VNNI kernel for Q8_0 and Q5_0 weights
 * (native/ggml-cpu/, built by scripts/build-cpu-kernels.mjs into build/native/; measured in
 * docs/engine.md). The build records in build/native/cpu-kernels.json whether it built and,
 * when it did not, why (no AVX-512 VNNI, no CMake, …); then only the prebuilt variants exist.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The variant name that stands for Parley's build. */
export const PARLEY_KERNELS = "parley";

const BUILD_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../build/native");

export interface ParleyKernels {
  /** The library to load; null where it was not built. */
  readonly file: string | null;
  /** The build's stamp (its inputs' hash): measurements taken with another build are stale. */
  readonly stamp: string | null;
  /** Why it was not built; null when it was. */
  readonly reason: string | null;
}

let cached: ParleyKernels | undefined;

/** What the last `npm run build` made of Parley's kernels (read once per process). */
export function parleyKernels(): ParleyKernels {
  if (cached !== undefined) return cached;
  const statusFile = path.join(BUILD_DIR, "cpu-kernels.json");
  const file = path.join(BUILD_DIR, "libggml-cpu-parley.so");
  let status: { built?: unknown; reason?: unknown; stamp?: unknown };
  try {
    status = JSON.parse(readFileSync(statusFile, "utf8")) as typeof status;
  } catch {
    return (cached = { file: null, stamp: null, reason: `not built (run npm run build): ${statusFile} is missing` });
  }
  if (status.built !== true) return (cached = { file: null, stamp: null, reason: `not built: ${typeof status.reason === "string" ? status.reason : "unknown reason"}` });
  if (!existsSync(file)) return (cached = { file: null, stamp: null, reason: `not built (run npm run build): ${file} is missing` });
  return (cached = { file, stamp: typeof status.stamp === "string" ? status.stamp : null, reason: null });
}

/**
 * What the addon is told to load for a `--cpu-kernels` variant: Parley's build by its path,
 * a prebuilt variant by its name. Parley's build where it was not built stays a name, which
 * the addon does not find among the prebuilt ones: it then keeps ggml's choice and says so.
 */
export function kernelsToLoad(variant: string | undefined): string | undefined {
  if (variant !== PARLEY_KERNELS) return variant;
  return parleyKernels().file ?? variant;
}

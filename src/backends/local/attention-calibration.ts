/**
 * `--flash-attention auto`: whether llama.cpp's flash attention or its plain attention path
 * serves this model faster on this machine, measured once and remembered.
 *
 * llama.cpp turns flash attention on wherever it is supported (its own `auto`), and on the CPU
 * it always is. Its CPU path pays per cached token and head, not per matrix: on stories260K
 * (8 heads of 8 dimensions) `llama-batched-bench -npp 112 -ntg 64 -t 1` decodes 4 sequences at
 * 4,187 tokens/s with it and 9,789 without (8 sequences: 4,193 and 10,170), while on
 * Qwen2-0.5B (64 dimensions a head) the flash path is 4–7% ahead at 4 and 8 sequences. And the
 * gap moves with the tokens a sequence holds: at 2 prompt tokens stories260K decodes twice as
 * fast *with* it. So both paths are timed in child processes (calibrate-kernels.ts, with the
 * CPU kernels the engine loads) at two depths, and each is costed on the reference turn of
 * kernel-calibration.ts, whose steps run deeper than either timing (referenceCost). The prompt
 * counts too: the plain path prefills stories260K 2.6× slower.
 *
 * The plain path is chosen only on a clear win (PLAIN_ATTENTION_MARGIN); otherwise llama.cpp
 * keeps its own choice. The timings are cached in `<cache dir>/attention.json`, keyed as the
 * kernel calibration is plus the kernels loaded, and the choice is made from them at each start.
 */
import path from "node:path";
import type { FlashAttentionMode } from "../../config/serve-config.js";
import {
  cacheKey,
  cachedCalibration,
  referenceCost,
  runChild,
  writeCache,
  type CalibrationKey,
  type Measurement,
} from "./kernel-calibration.js";

/** What a context is created with: forced on or off, or llama.cpp's own choice ("auto"). */
export type FlashAttentionSetting = boolean | "auto";

export interface AttentionCalibration {
  readonly flashAttention: FlashAttentionSetting;
  /** The two timings, flash attention on and off. */
  readonly on: Measurement;
  readonly off: Measurement;
  readonly measuredAt: string;
}

export interface AttentionDecision {
  readonly flashAttention: FlashAttentionSetting;
  /** Why, for the start-up log. */
  readonly reason: string;
  readonly calibration?: AttentionCalibration;
}

/**
 * How much cheaper the plain path must serve the reference turn to be chosen: 25%. The turn
 * does not show what it costs beyond the timed depths. It keeps a score matrix of every cached
 * token per head in its compute buffer (memory that grows with the context), and its window
 * is padded to 256 cached tokens, so its cost looks flat up to that depth and grows past it.
 * And a large model's step timings spread: a Qwen2-7B-shaped q8_0 at --parallel 4 took
 * 184 ms a step at 12 tokens and 160 ms at 74 with the plain path in one child, which made that
 * path look 7% cheaper. stories260K's win is about 4x.
 */
export const PLAIN_ATTENTION_MARGIN = 0.25;

/** Off when the plain path serves the reference turn more than PLAIN_ATTENTION_MARGIN cheaper; else llama.cpp's choice. */
export function pickFlashAttention(on: Measurement, off: Measurement, parallel: number): FlashAttentionSetting {
  return referenceCost(off, parallel) < referenceCost(on, parallel) * (1 - PLAIN_ATTENTION_MARGIN) ? false : "auto";
}

export interface AttentionOptions extends CalibrationKey {
  readonly requested: FlashAttentionMode;
  /** The CPU kernels the engine loads (undefined: ggml's choice); they are timed with them. */
  readonly variant: string | undefined;
  readonly cacheDir: string;
  /** Told before measuring starts. */
  readonly onMeasuring?: (cacheFile: string) => void;
}

/** `--flash-attention` resolved: as forced, cached, measured now, or llama.cpp's choice when measuring failed. */
export async function resolveFlashAttention(options: AttentionOptions): Promise<AttentionDecision> {
  if (options.requested !== "auto") return { flashAttention: options.requested === "on", reason: "--flash-attention" };
  const cacheFile = path.join(options.cacheDir, "attention.json");
  // attentionMethod: how the two paths are timed (calibrate-kernels.ts with `deep`); a change there measures again.
  const key = cacheKey(options, { stage: "attention", attentionMethod: 1, variant: options.variant ?? "ggml" });
  const cached = cachedCalibration<AttentionCalibration>(cacheFile, key);
  if (cached !== undefined) {
    // Chosen again from the cached timings: a change of the rule needs no new measurement.
    const flashAttention = pickFlashAttention(cached.on, cached.off, options.parallel);
    return { flashAttention, reason: `measured ${cached.measuredAt} (cached in ${cacheFile})`, calibration: { ...cached, flashAttention } };
  }
  options.onMeasuring?.(cacheFile);
  const measure = (flashAttention: boolean): Promise<Measurement> =>
    runChild({
      variant: options.variant ?? null,
      modelPath: options.modelPath,
      parallel: options.parallel,
      threads: options.threads ?? null,
      threadpool: options.threadpool,
      nativeLoop: options.nativeLoop,
      flashAttention,
      deep: true,
    });
  let on: Measurement;
  let off: Measurement;
  try {
    on = await measure(true);
    off = await measure(false);
  } catch (error) {
    return { flashAttention: "auto", reason: `llama.cpp's choice: flash attention could not be measured (${error instanceof Error ? error.message : String(error)})` };
  }
  const calibration: AttentionCalibration = { flashAttention: pickFlashAttention(on, off, options.parallel), on, off, measuredAt: new Date().toISOString() };
  try {
    writeCache(cacheFile, key, calibration);
  } catch {
    // A cache that cannot be written (read-only directory) only means measuring again next start.
  }
  return { flashAttention: calibration.flashAttention, reason: "measured now on this model", calibration };
}

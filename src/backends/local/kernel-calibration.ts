/**
 * `--cpu-kernels auto`: which CPU kernel variant serves this model fastest on this machine,
 * measured once and remembered.
 *
 * The measurements in docs/engine.md show no fixed rule holds: on one AMD EPYC the AVX-512
 * `zen4` kernels prefill Qwen2-0.5B 1.3× faster than the AVX2 ones but decode batches of 4–8
 * tokens 1.2–1.3× slower, and on stories260K they are slower at both (5× at prefill). So each
 * candidate variant is loaded in a child process of its own (a process keeps the variant its
 * engine loaded first; calibrate-kernels.ts) and timed on the served model, with its threads
 * and `--parallel`. The winner serves a reference workload fastest: `parallel` requests of
 * REFERENCE_PROMPT new prompt tokens and REFERENCE_COMPLETION completion tokens each.
 *
 * The result is cached in `<cache dir>/cpu-kernels.json`, keyed by the CPU, node-llama-cpp's
 * version, the model file (path, size, modification time), threads, parallel, whether the
 * threadpool is on, which loop decodes and which build of Parley's own kernels is a candidate
 * (each changes the timings); the first start of a model costs one model load and about a
 * second of work per candidate (a 7B model: tens of seconds). A candidate that fails is
 * skipped; when none succeeds, the fixed rule of cpu-kernels.ts decides.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { avx2Variants, chooseCpuKernels, type CpuInfo } from "./cpu-kernels.js";
import { PARLEY_KERNELS } from "./parley-kernels.js";

/** What calibrate-kernels.ts is asked to measure (its one argument, as JSON). */
export interface CalibrationRequest {
  readonly variant: string | null;
  readonly modelPath: string;
  readonly parallel: number;
  readonly threads: number | null;
  /** Whether the server runs with the persistent threadpool (it changes the timings). */
  readonly threadpool: boolean;
  /** Whether it decodes with Parley's native loop (timed as it serves), else node-llama-cpp's `evaluate`. */
  readonly nativeLoop: boolean;
  /** Flash attention forced on or off; absent: llama.cpp's own choice. */
  readonly flashAttention?: boolean;
  /** Also time the steps after every sequence holds a PROMPT_TOKENS-token prompt. */
  readonly deep?: boolean;
}

/** What it prints. */
export interface CalibrationResult {
  readonly loaded: string | null;
  readonly threads: number;
  readonly prefillMs: number;
  readonly stepMs: number;
  /** The mean tokens each sequence held during the steps of `stepMs`. */
  readonly stepDepth?: number;
  /** With `deep`: the step time when each sequence held `deepStepDepth` tokens on average. */
  readonly deepStepMs?: number;
  readonly deepStepDepth?: number;
  /** The loop the steps were timed through. */
  readonly loop: "native" | "library";
}

/** Tokens in the timed prompt; the reference workload scales it. */
export const PROMPT_TOKENS = 64;

/**
 * The reference chat turn: 128 prompt tokens to evaluate, 256 to generate. A chat's history is
 * served from the sequence's cache (prefix reuse), so what a turn evaluates anew is mostly
 * its new message, and answers run longer. With prompt-heavy weights (256 in, 128 out) the
 * measured Qwen2-0.5B at --parallel 8 picked zen4, which then served 8 streams at 0.80×
 * llama-server where the AVX2 kernels reach 0.99× (bench/results/concurrency.md).
 */
export const REFERENCE_PROMPT = 128;
export const REFERENCE_COMPLETION = 256;

/** A child may take this long (a large model's load included) before it counts as failed. */
const CHILD_TIMEOUT_MS = 5 * 60_000;

export interface Measurement extends CalibrationResult {
  /** What the child asked for: a variant, or null for ggml's own choice. */
  readonly requested: string | null;
}

export interface Calibration {
  /** The variant to load (never null: ggml's choice is recorded by the name it loaded). */
  readonly variant: string;
  readonly measurements: readonly Measurement[];
  readonly measuredAt: string;
}

/**
 * What to time: ggml's own choice, the AVX2-class variants this CPU runs (the AVX-512
 * ones measured alike, see docs/engine.md), and Parley's own build where it was built.
 * Duplicates collapse once the children report what they loaded.
 */
export function candidateVariants(cpu: CpuInfo, parleyBuilt = false): Array<string | null> {
  return [null, ...avx2Variants(cpu), ...(parleyBuilt ? [PARLEY_KERNELS] : [])];
}

/**
 * Milliseconds to serve the reference workload with one measurement's speeds. With steps timed
 * at two depths, a step's cost is taken as linear in the tokens its sequences hold (attention
 * reads them all) and summed over the reference turn's steps, which decode from
 * REFERENCE_PROMPT to REFERENCE_PROMPT + REFERENCE_COMPLETION tokens; else every step costs `stepMs`.
 */
export function referenceCost(measurement: Pick<Measurement, "prefillMs" | "stepMs" | "stepDepth" | "deepStepMs" | "deepStepDepth">, parallel: number): number {
  const { stepMs, stepDepth, deepStepMs, deepStepDepth } = measurement;
  let step = stepMs;
  if (stepDepth !== undefined && deepStepMs !== undefined && deepStepDepth !== undefined && deepStepDepth > stepDepth) {
    // Attention cannot get cheaper as a sequence holds more: a negative slope is noise.
    const perToken = Math.max(0, (deepStepMs - stepMs) / (deepStepDepth - stepDepth));
    step = stepMs + perToken * (REFERENCE_PROMPT + REFERENCE_COMPLETION / 2 - stepDepth);
  }
  return parallel * measurement.prefillMs * (REFERENCE_PROMPT / PROMPT_TOKENS) + REFERENCE_COMPLETION * step;
}

/**
 * Costs this close to the cheapest are a tie: one variant's timings spread by 2–4% from one
 * measuring child to the next on the machine these defaults were measured on (Qwen2-0.5B at
 * --parallel 1, where `zen4` and `alderlake` decode alike and either could come out ahead).
 */
export const TIE_MARGIN = 0.03;

/**
 * The cheapest measurement's variant, except that ggml's own choice (the measurement that
 * requested no variant) is kept when it ties the cheapest within TIE_MARGIN: Parley departs
 * from it only for a clear win. Among the others, an exact tie keeps the earlier.
 */
export function pickVariant(measurements: readonly Measurement[], parallel: number): string | undefined {
  const usable = measurements.filter((each) => each.loaded !== null && Number.isFinite(each.prefillMs) && Number.isFinite(each.stepMs));
  let best: Measurement | undefined;
  for (const measurement of usable) {
    if (best === undefined || referenceCost(measurement, parallel) < referenceCost(best, parallel)) best = measurement;
  }
  if (best === undefined) return undefined;
  const ggml = usable.find((each) => each.requested === null);
  if (ggml !== undefined && referenceCost(ggml, parallel) <= referenceCost(best, parallel) * (1 + TIE_MARGIN)) return ggml.loaded ?? undefined;
  return best.loaded ?? undefined;
}

export interface CalibrationKey {
  readonly cpu: CpuInfo;
  readonly engineVersion: string;
  readonly modelPath: string;
  readonly threads: number | undefined;
  readonly parallel: number;
  readonly threadpool: boolean;
  readonly nativeLoop: boolean;
  /** The stamp of Parley's own kernels (parley-kernels.ts), null where they were not built: a candidate only when built, and measured again when rebuilt. */
  readonly parleyKernels: string | null;
}

/** A hash of everything that changes the timings; `extra` distinguishes what else a cache entry depends on. */
export function cacheKey(key: CalibrationKey, extra: Record<string, unknown> = {}): string {
  let model = { path: key.modelPath, size: 0, mtimeMs: 0 };
  try {
    const stat = statSync(key.modelPath);
    model = { path: realpathSync(key.modelPath), size: stat.size, mtimeMs: stat.mtimeMs };
  } catch {
    // an unreadable file fails later, when it is loaded
  }
  const identity = {
    cpu: os.cpus()[0]?.model ?? "",
    vendor: key.cpu.vendor,
    flags: [...key.cpu.flags].sort(),
    engine: key.engineVersion,
    model,
    threads: key.threads ?? "default",
    parallel: key.parallel,
    threadpool: key.threadpool,
    nativeLoop: key.nativeLoop,
    parleyKernels: key.parleyKernels,
    // 2: steps timed through the loop that serves (calibrate-kernels.ts), not always `evaluate`;
    // 3: ggml's choice kept within TIE_MARGIN (pickVariant).
    method: 3,
    ...extra,
  };
  return createHash("sha256").update(JSON.stringify(identity)).digest("hex");
}

interface CacheFile<Entry> {
  readonly version: 1;
  readonly entries: Record<string, Entry>;
}

function readCache<Entry>(file: string): CacheFile<Entry> {
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as CacheFile<Entry>;
    if (parsed.version === 1 && typeof parsed.entries === "object" && parsed.entries !== null) return parsed;
  } catch {
    // missing or unreadable: measure again
  }
  return { version: 1, entries: {} };
}

/** Adds one entry to a cache file of measurements, replacing the file whole (a rename). */
export function writeCache<Entry>(file: string, key: string, entry: Entry): void {
  const cache = readCache<Entry>(file);
  const next: CacheFile<Entry> = { version: 1, entries: { ...cache.entries, [key]: entry } };
  mkdirSync(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(next, null, 2)}\n`);
  renameSync(temporary, file);
}

/** The cached entry for `key`, if any. */
export function cachedCalibration<Entry = Calibration>(cacheFile: string, key: string): Entry | undefined {
  return readCache<Entry>(cacheFile).entries[key];
}

function childCommand(): { command: string; args: string[] } {
  const self = fileURLToPath(import.meta.url);
  // Built: dist/…/calibrate-kernels.js under node. From source (tests, tsx): the .ts file.
  if (self.endsWith(".ts")) return { command: process.execPath, args: ["--import", "tsx", path.join(path.dirname(self), "calibrate-kernels.ts")] };
  return { command: process.execPath, args: [path.join(path.dirname(self), "calibrate-kernels.js")] };
}

/** Runs one measurement in a child process of its own (calibrate-kernels.ts). */
export function runChild(request: CalibrationRequest): Promise<Measurement> {
  const { command, args } = childCommand();
  return new Promise((resolve, reject) => {
    // A server stopped while measuring takes its measuring child with it.
    const killChild = (): void => {
      child.kill("SIGKILL");
    };
    process.once("exit", killChild);
    const child = execFile(command, [...args, JSON.stringify(request)], { timeout: CHILD_TIMEOUT_MS, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      process.removeListener("exit", killChild);
      if (error !== null) {
        reject(new Error(`${error.message.split("\n")[0]}${stderr.trim() === "" ? "" : `: ${stderr.trim().split("\n").at(-1)}`}`));
        return;
      }
      try {
        const result = JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as CalibrationResult;
        resolve({ requested: request.variant, ...result });
      } catch {
        reject(new Error(`unreadable result: ${stdout.trim().slice(0, 200)}`));
      }
    });
  });
}

export interface CalibrateOptions extends CalibrationKey {
  readonly cacheFile: string;
  /** Reports each candidate's failure; the others still count. */
  readonly onFailure?: (variant: string | null, error: Error) => void;
}

/** Measures every candidate (one child at a time: they would disturb each other) and caches the winner. */
export async function calibrate(options: CalibrateOptions): Promise<Calibration | undefined> {
  const measurements: Measurement[] = [];
  for (const variant of candidateVariants(options.cpu, options.parleyKernels !== null)) {
    try {
      const measurement = await runChild({
        variant,
        modelPath: options.modelPath,
        parallel: options.parallel,
        threads: options.threads ?? null,
        threadpool: options.threadpool,
        nativeLoop: options.nativeLoop,
      });
      // A forced variant this CPU cannot run falls back to ggml's choice: the same as `null`.
      if (measurement.loaded !== null && measurements.some((each) => each.loaded === measurement.loaded)) continue;
      measurements.push(measurement);
    } catch (error) {
      options.onFailure?.(variant, error instanceof Error ? error : new Error(String(error)));
    }
  }
  const variant = pickVariant(measurements, options.parallel);
  if (variant === undefined) return undefined;
  const calibration: Calibration = { variant, measurements, measuredAt: new Date().toISOString() };
  try {
    writeCache(options.cacheFile, cacheKey(options), calibration);
  } catch {
    // A cache that cannot be written (read-only directory) only means measuring again next start.
  }
  return calibration;
}

export interface KernelDecision {
  /** The variant to load; undefined leaves the choice to ggml. */
  readonly variant: string | undefined;
  /** Why, for the start-up log. */
  readonly reason: string;
  /** The timings behind a measured choice, when they were taken or read from the cache now. */
  readonly calibration?: Calibration;
}

export interface ResolveOptions extends Omit<CalibrateOptions, "cacheFile" | "onFailure"> {
  /** `--cpu-kernels`: undefined for `auto`, `ggml` for ggml's own choice, or a variant. */
  readonly requested: string | undefined;
  readonly cacheDir: string;
  /** Whether variants can be forced at all (the tuning addon is loaded). */
  readonly tunable: boolean;
  /** Told before measuring starts, and of each candidate that failed. */
  readonly onMeasuring?: (cacheFile: string) => void;
  readonly onFailure?: (variant: string | null, error: Error) => void;
}

/** `--cpu-kernels` resolved to a variant: as given, ggml's, cached, measured now, or by rule. */
export async function resolveCpuKernels(options: ResolveOptions): Promise<KernelDecision> {
  if (options.requested === "ggml") return { variant: undefined, reason: "ggml's choice (--cpu-kernels ggml)" };
  if (options.requested !== undefined) return { variant: options.requested, reason: "--cpu-kernels" };
  if (!options.tunable) return { variant: undefined, reason: "ggml's choice (the tuning addon is not loaded)" };
  if (candidateVariants(options.cpu, options.parleyKernels !== null).length === 1) return { variant: undefined, reason: "ggml's choice (the only candidate on this CPU)" };
  const cacheFile = path.join(options.cacheDir, "cpu-kernels.json");
  const key = cacheKey(options);
  const cached = cachedCalibration(cacheFile, key);
  if (cached !== undefined) return { variant: cached.variant, reason: `measured ${cached.measuredAt} (cached in ${cacheFile})`, calibration: cached };
  options.onMeasuring?.(cacheFile);
  const calibration = await calibrate({ ...options, cacheFile, ...(options.onFailure === undefined ? {} : { onFailure: options.onFailure }) });
  if (calibration !== undefined) return { variant: calibration.variant, reason: "measured now on this model", calibration };
  const rule = chooseCpuKernels(undefined, options.parallel, options.cpu);
  return { variant: rule.variant, reason: `no candidate could be measured; by rule: ${rule.reason}` };
}

/**
 * Loads Parley's native addon (native/*.c, built by `npm run build` into build/native/): a
 * persistent ggml threadpool for every llama.cpp context, a choice of CPU kernel variant, and
 * Parley's own decode loop (native-decode-loop.ts). All are measured in docs/engine.md.
 *
 * The addon works by ELF symbol interposition, so it must be loaded, RTLD_GLOBAL, before
 * node-llama-cpp loads its own addon: `openEngine` calls this before `getLlama`. Without the
 * addon (no C compiler at build time, not Linux) the engine runs as node-llama-cpp ships it,
 * and `status().active` says why not.
 */
import { existsSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { kernelsToLoad, parleyKernels, PARLEY_KERNELS } from "./parley-kernels.js";

export interface TuningOptions {
  /** Attach a persistent threadpool to each context. Defaults to true. */
  readonly threadpool?: boolean | undefined;
  /**
   * A CPU kernel variant of the prebuilt llama.cpp (`haswell`, `zen4`, `skylakex`, …),
   * `parley` for Parley's own build (parley-kernels.ts), or undefined for ggml's own choice:
   * the highest instruction set this CPU runs.
   */
  readonly cpuKernels?: string | undefined;
  /** Decode local models with Parley's native loop, not node-llama-cpp's `evaluate`. Defaults to true. */
  readonly nativeLoop?: boolean | undefined;
}

export interface TuningStatus {
  /** Whether the addon is loaded and applies to contexts created from now on. */
  readonly active: boolean;
  /** Why it is not active; null when it is. */
  readonly reason: string | null;
  readonly threadpool: boolean;
  /** Whether local models decode with Parley's native loop (the addon is active and it is not turned off). */
  readonly nativeLoop: boolean;
  /** Contexts given a threadpool since start, and those still alive. */
  readonly poolsAttached: number;
  readonly poolsLive: number;
  /** The CPU kernel variant asked for (null: ggml's choice) and the one loaded (null: none yet). */
  readonly cpuKernelsRequested: string | null;
  readonly cpuKernelsLoaded: string | null;
  /** The last thing the addon could not do (it then leaves llama.cpp's default in place). */
  readonly lastError: string | null;
}

/** The decode loop's native functions (native/decode-loop.c says what each does). */
export interface NativeLoopAddon {
  /** The newest llama.cpp context's number (0 before any). */
  contextSerial(): number;
  /** The numbers of the llama.cpp contexts alive now, newest first. */
  liveContexts(): number[];
  loopOpen(contextSerial: number, maxAhead: number, onEvents: (events: Int32Array) => void): object;
  loopStart(
    loop: object,
    sequence: number,
    tokens: Int32Array,
    keep: number,
    limit: number,
    temperature: number,
    topK: number,
    topP: number,
    seed: number,
    presencePenalty: number,
    frequencyPenalty: number,
    penaltyLastN: number,
  ): void;
  loopAck(loop: object, sequence: number, count: number): void;
  loopCancel(loop: object, sequence: number): void;
  loopClose(loop: object): void;
}

interface Addon extends NativeLoopAddon {
  configure(options: { threadpool: boolean; poll: number; cpuKernels: string | null }): void;
  stats(): Omit<TuningStatus, "active" | "reason" | "threadpool" | "nativeLoop">;
}

/**
 * ggml's threadpool polling level (0–100). Its default, 50, has idle workers spin between
 * graphs; on 2 cores that spinning competes with sampling and the JavaScript thread, and 0
 * measured faster for prompt batches (docs/engine.md).
 */
const POLL_LEVEL = 0;

const ADDON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../build/native/llama-tuning.node");

let addon: Addon | undefined;
let failure: string | null = null;
let threadpool = true;
let nativeLoop = true;

/**
 * Why the built addon must not be loaded, or null when it may: the build's status file must
 * say it built. A build that failed removes the addon; this also refuses one left behind by
 * hand, since an addon compiled against other llama.cpp headers would corrupt memory.
 */
function notLoadable(): string | null {
  let status: { built?: unknown; reason?: unknown };
  try {
    status = JSON.parse(readFileSync(path.join(path.dirname(ADDON_PATH), "status.json"), "utf8")) as typeof status;
  } catch {
    return `not built (run npm run build): ${path.join(path.dirname(ADDON_PATH), "status.json")} is missing`;
  }
  if (status.built !== true) return `not built: ${typeof status.reason === "string" ? status.reason : "unknown reason"}`;
  if (!existsSync(ADDON_PATH)) return `not built (run npm run build): ${ADDON_PATH} is missing`;
  return null;
}

/**
 * Loads the addon once and applies `options`. Call before node-llama-cpp's first
 * `getLlama`; options given later apply to contexts created later, but not to the CPU kernel
 * variant, which is fixed when the engine loads its backends.
 */
export function loadTuning(options: TuningOptions = {}): TuningStatus {
  if (addon === undefined && failure === null) {
    if (process.platform !== "linux") {
      failure = `not supported on ${process.platform}`;
    } else if ((failure = notLoadable()) === null) {
      const module = { exports: {} as Addon };
      try {
        process.dlopen(module, ADDON_PATH, os.constants.dlopen.RTLD_LAZY | os.constants.dlopen.RTLD_GLOBAL);
        addon = module.exports;
      } catch (error) {
        failure = `could not load ${ADDON_PATH}: ${error instanceof Error ? error.message : String(error)}`;
      }
    }
  }
  threadpool = options.threadpool ?? true;
  nativeLoop = options.nativeLoop ?? true;
  addon?.configure({ threadpool, poll: POLL_LEVEL, cpuKernels: kernelsToLoad(options.cpuKernels) ?? null });
  return tuningStatus();
}

export function tuningStatus(): TuningStatus {
  if (addon === undefined) {
    return {
      active: false,
      reason: failure ?? "not loaded",
      threadpool: false,
      nativeLoop: false,
      poolsAttached: 0,
      poolsLive: 0,
      cpuKernelsRequested: null,
      cpuKernelsLoaded: null,
      lastError: null,
    };
  }
  const stats = addon.stats();
  // The addon knows Parley's build by its path; report it by its name.
  const requested = stats.cpuKernelsRequested !== null && stats.cpuKernelsRequested === parleyKernels().file ? PARLEY_KERNELS : stats.cpuKernelsRequested;
  return { active: true, reason: null, threadpool, nativeLoop, ...stats, cpuKernelsRequested: requested };
}

/** The native decode loop's functions, or undefined where the addon is not loaded or the loop is turned off. */
export function nativeLoopAddon(): NativeLoopAddon | undefined {
  return nativeLoop ? addon : undefined;
}

/** How the engine runs, for the `parley_engine_info` metric. */
export interface EngineInfo {
  /** The CPU kernels loaded: a prebuilt variant's name, or `parley` for Parley's own build. */
  readonly cpuKernels: string;
  readonly decodeLoop: "native" | "library";
  readonly threadpool: boolean;
}

let engineInfo: EngineInfo | undefined;

/**
 * How the engine runs, for the `parley_engine_info` metric; null before its CPU kernels load,
 * or without the addon. Fixed once the kernels load, so read once: the addon finds the loaded
 * variant by looking symbols up in every loaded library, too much for every scrape.
 */
export function engineGauge(): EngineInfo | null {
  if (engineInfo !== undefined) return engineInfo;
  const status = tuningStatus();
  if (!status.active || status.cpuKernelsLoaded === null) return null;
  engineInfo = { cpuKernels: status.cpuKernelsLoaded, decodeLoop: status.nativeLoop ? "native" : "library", threadpool: status.threadpool };
  return engineInfo;
}

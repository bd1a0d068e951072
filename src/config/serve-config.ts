/**
 * The typed configuration of `parley serve`, built from flags and environment and
 * validated once here, with errors that name the flag at fault.
 */
import os from "node:os";
import path from "node:path";
import { SEED_RANGES, type ParameterRanges, type Range } from "../protocol/parameters.js";
import { buildAccessConfig, type AccessConfig, type AccessFlags } from "./access-config.js";
import { ConfigError } from "./config-error.js";
import { readModelFile, type LocalModelConfig, type ModelConfig } from "./model-file.js";

export { ConfigError } from "./config-error.js";

export interface ServeConfig {
  readonly host: string;
  readonly port: number;
  readonly apiKeys: readonly string[];
  readonly bodyLimit: number;
  readonly ranges: ParameterRanges;
  /**
   * What is served: the `--model` flags' local model, then the config file's models. With
   * neither, Parley's default local model.
   */
  readonly models: readonly ModelConfig[];
  readonly cacheDir: string;
  readonly logLevel: string;
  /** On SIGTERM, how long in-flight requests may run on before they are stopped. Defaults to 30 s. */
  readonly drainTimeoutMs: number;
  readonly access: AccessConfig;
  /** Bearer token of the admin API; undefined disables it. */
  readonly adminToken: string | undefined;
  /** How the in-process llama.cpp engine runs (docs/engine.md). */
  readonly engine: EngineConfig;
}

/** `--flash-attention`: measured per model (`auto`), or forced. */
export type FlashAttentionMode = "auto" | "on" | "off";

export interface EngineConfig {
  /** A persistent ggml threadpool per context (Parley's tuning addon). Defaults to true. */
  readonly threadpool: boolean;
  /**
   * `--cpu-kernels`: undefined for `auto` (measured per model, kernel-calibration.ts), `ggml`
   * for ggml's own choice, or a variant of the prebuilt llama.cpp.
   */
  readonly cpuKernels: string | undefined;
  /** Parley's native decode loop, not node-llama-cpp's `evaluate` (the addon's). Defaults to true. */
  readonly nativeLoop: boolean;
  /** `--flash-attention`: `auto` (measured per model, attention-calibration.ts), `on` or `off`. */
  readonly flashAttention: FlashAttentionMode;
}

/** Raw values as commander hands them over. */
export interface ServeFlags extends AccessFlags {
  adminToken?: string;
  config?: string;
  drainTimeout?: string;
  model?: string;
  modelName?: string[];
  host?: string;
  port?: string;
  apiKey?: string[];
  threads?: string;
  contextSize?: string;
  parallel?: string;
  queueSize?: string;
  queueTimeout?: string;
  bodyLimit?: string;
  range?: string[];
  cacheDir?: string;
  logLevel?: string;
  cpuKernels?: string;
  flashAttention?: string;
  threadpool?: boolean;
  nativeLoop?: boolean;
}

function integer(flag: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!/^\s*-?\d+\s*$/.test(value) || !Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
    throw new ConfigError(`${flag} must be an integer between ${min} and ${max}, got '${value}'.`);
  }
  return parsed;
}

const RANGE_NAMES = Object.keys(SEED_RANGES) as Array<keyof ParameterRanges>;

/** `--range temperature=0:2` widens (or narrows) what a deployment accepts. */
export function parseRanges(specs: readonly string[]): ParameterRanges {
  const ranges: Record<keyof ParameterRanges, Range> = { ...SEED_RANGES };
  for (const spec of specs) {
    const match = /^([a-z_]+)=(-?[\d.]+):(-?[\d.]+)$/.exec(spec.trim());
    const name = match?.[1] as keyof ParameterRanges | undefined;
    if (match === null || name === undefined || !RANGE_NAMES.includes(name)) {
      throw new ConfigError(`--range must look like NAME=MIN:MAX with NAME one of ${RANGE_NAMES.join(", ")}; got '${spec}'.`);
    }
    const min = Number(match[2]);
    const max = Number(match[3]);
    if (!Number.isFinite(min) || !Number.isFinite(max) || min > max) throw new ConfigError(`--range ${spec}: MIN must not exceed MAX.`);
    if (name === "max_tokens" && (!Number.isInteger(min) || !Number.isInteger(max) || min < 1)) {
      throw new ConfigError(`--range ${spec}: max_tokens bounds must be integers of at least 1.`);
    }
    ranges[name] = { ...SEED_RANGES[name], min, max };
  }
  return ranges;
}

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PARLEY_HOME !== undefined && env.PARLEY_HOME !== "") return path.join(env.PARLEY_HOME, "models");
  const base = env.XDG_CACHE_HOME !== undefined && env.XDG_CACHE_HOME !== "" ? env.XDG_CACHE_HOME : path.join(os.homedir(), ".cache");
  return path.join(base, "parley", "models");
}

function adminToken(value: string | undefined): string | undefined {
  if (value === undefined || value === "") return undefined;
  if (value.length < 16 || /\s/.test(value)) throw new ConfigError("The admin token must be at least 16 characters without whitespace.");
  return value;
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

function chooseModels(flags: ServeFlags, names: readonly string[], env: NodeJS.ProcessEnv): ModelConfig[] {
  const local: LocalModelConfig = {
    backend: "local",
    source: flags.model,
    names,
    threads: integer("--threads", flags.threads, 1, 1024),
    contextSize: integer("--context-size", flags.contextSize, 64, 1 << 24),
    parallel: integer("--parallel", flags.parallel, 1, 256) ?? 1,
    queueSize: integer("--queue-size", flags.queueSize, 0, 1_000_000),
    queueTimeoutMs: flags.queueTimeout === undefined ? undefined : (integer("--queue-timeout", flags.queueTimeout, 1, 86_400) ?? 0) * 1000,
  };
  if (flags.config === undefined) return [local];
  const fromFile = readModelFile(flags.config, env);
  // The file's models replace the default model, but a --model given beside it is served too.
  const models = flags.model !== undefined || fromFile.length === 0 ? [local, ...fromFile] : fromFile;
  if (flags.model === undefined && (flags.modelName ?? []).length > 0 && fromFile.length > 0) {
    throw new ConfigError("--model-name names the --model flag's model; give names in the config file for its models.");
  }
  return models;
}

export function buildServeConfig(flags: ServeFlags, env: NodeJS.ProcessEnv = process.env): ServeConfig {
  const envKeys = (env.PARLEY_API_KEYS ?? "").split(",").map((key) => key.trim()).filter((key) => key.length > 0);
  const apiKeys = [...(flags.apiKey ?? []), ...envKeys];
  for (const key of apiKeys) {
    if (/\s/.test(key) || key.length < 8) throw new ConfigError("Every API key must be at least 8 characters without whitespace.");
  }
  const names = (flags.modelName ?? []).map((name) => name.trim());
  if (names.some((name) => name.length === 0)) throw new ConfigError("--model-name must not be empty.");
  const logLevel = flags.logLevel ?? env.PARLEY_LOG_LEVEL ?? "info";
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(", ")}.`);
  const host = flags.host ?? "127.0.0.1";
  if (host.trim() === "") throw new ConfigError("--host must not be empty.");
  return {
    host,
    port: integer("--port", flags.port, 0, 65535) ?? 8080,
    apiKeys,
    bodyLimit: integer("--body-limit", flags.bodyLimit, 1024, 1024 ** 3) ?? 1024 * 1024,
    ranges: parseRanges(flags.range ?? []),
    models: chooseModels(flags, names, env),
    cacheDir: flags.cacheDir ?? defaultCacheDir(env),
    logLevel,
    drainTimeoutMs: (integer("--drain-timeout", flags.drainTimeout, 0, 3600) ?? 30) * 1000,
    access: buildAccessConfig(flags, env),
    adminToken: adminToken(flags.adminToken ?? env.PARLEY_ADMIN_TOKEN),
    engine: {
      threadpool: flags.threadpool ?? true,
      cpuKernels: cpuKernels(flags.cpuKernels),
      nativeLoop: flags.nativeLoop ?? true,
      flashAttention: flashAttention(flags.flashAttention),
    },
  };
}

/** `--cpu-kernels`: `auto`, `ggml`, or a variant name as in libggml-cpu-NAME.so (checked at load). */
function cpuKernels(value: string | undefined): string | undefined {
  if (value === undefined || value === "auto") return undefined;
  if (!/^[a-z0-9_]{1,32}$/.test(value)) {
    throw new ConfigError(`--cpu-kernels must be 'auto', 'ggml' or a variant name such as haswell, zen4, skylakex or parley; got '${value}'.`);
  }
  return value;
}

const FLASH_ATTENTION_MODES: readonly FlashAttentionMode[] = ["auto", "on", "off"];

/** `--flash-attention`: `auto` (the default), `on` or `off`. */
function flashAttention(value: string | undefined): FlashAttentionMode {
  if (value === undefined) return "auto";
  const mode = FLASH_ATTENTION_MODES.find((each) => each === value);
  if (mode === undefined) throw new ConfigError(`--flash-attention must be 'auto', 'on' or 'off'; got '${value}'.`);
  return mode;
}

/** Loopback addresses, where serving without API keys exposes nothing beyond this machine. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  return bare === "localhost" || bare === "::1" || /^127(\.\d{1,3}){3}$/.test(bare);
}

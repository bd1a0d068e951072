/**
 * The models section of `parley serve --config FILE.yaml`: local GGUF models and pools of
 * OpenAI-compatible upstream servers, validated once here with errors that name the file
 * and the path of the value at fault (`parley.yaml: models[0].upstreams[1].url: …`).
 *
 * Strings may name environment variables as `${NAME}` (e.g. an upstream's API key), so
 * secrets stay out of the file; an unset variable is an error, not an empty string.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { ConfigError } from "./config-error.js";

export interface LocalModelConfig {
  readonly backend: "local";
  /** A GGUF path or an `hf:`/https URI; undefined means Parley's default model. */
  readonly source: string | undefined;
  /** Names clients may use; the first is the model's id. Empty means derived from the source. */
  readonly names: readonly string[];
  readonly threads: number | undefined;
  readonly contextSize: number | undefined;
  readonly parallel: number;
  readonly queueSize: number | undefined;
  readonly queueTimeoutMs: number | undefined;
}

export type BalancingPolicy = "least_outstanding" | "prefix_affinity" | "weighted_round_robin";
export const BALANCING_POLICIES: readonly BalancingPolicy[] = ["least_outstanding", "prefix_affinity", "weighted_round_robin"];

export interface UpstreamServerConfig {
  /** The server's OpenAI base URL, `/v1` included (as clients' `base_url`), without a trailing slash. */
  readonly url: string;
  /** Share of traffic under weighted round robin, and the divisor of load elsewhere. Defaults to 1. */
  readonly weight: number;
  /** Sent as `Authorization: Bearer …` to this server only; never shown or logged. */
  readonly apiKey: string | undefined;
}

export interface UpstreamTimeouts {
  /** To open a TCP connection. Default 5 s. */
  readonly connectMs: number;
  /** From sending the request to the first generated text (streaming) — a failover point. Default 60 s. */
  readonly firstTokenMs: number;
  /** Longest silence between two streamed chunks once text flows. Default 30 s. */
  readonly idleMs: number;
  /** The whole request, streaming or not. Default 600 s. */
  readonly totalMs: number;
}

export interface UpstreamRetries {
  /** Tries per request, the first included, each on a different upstream. Default 3. */
  readonly maxAttempts: number;
  /** Retries allowed per request sent, over a 10 s window (Finagle-style budget). Default 0.2. */
  readonly budgetRatio: number;
  /** Retries allowed per second whatever the ratio, so a quiet pool can still fail over. Default 5. */
  readonly minPerSecond: number;
  /** A 429 is retried elsewhere only when its Retry-After is at most this. Default 2 s. */
  readonly maxRetryAfterMs: number;
}

export interface UpstreamHealth {
  /** Path on each server's origin probed by GET; default `/v1/models` under the base URL. */
  readonly path: string | undefined;
  /** Between active checks. Default 5 s; 0 turns active checks off. */
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Consecutive failures (requests or checks) that eject a server. Default 3. */
  readonly failureThreshold: number;
  /** First ejection; doubles on each failed trial up to `maxBackoffMs`. Defaults 2 s and 60 s. */
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
}

export interface PrefixAffinityConfig {
  /** Share of the prompt the best cached prefix must cover to win. Default 0.5 (SGLang's cache threshold). */
  readonly minMatch: number;
  /** The pool counts as imbalanced — and load wins over cache — when the busiest server has this many more requests in flight than the idlest… Default 32. */
  readonly balanceAbs: number;
  /** …and more than this many times as many. Default 1.5. */
  readonly balanceRel: number;
  /** Prompt characters per hashed block. Default 64. */
  readonly blockChars: number;
  /** Blocks remembered, least recently used forgotten first. Default 100,000. */
  readonly maxBlocks: number;
}

export interface UpstreamModelConfig {
  readonly backend: "upstream";
  readonly names: readonly string[];
  /** The name sent upstream as `model`. Defaults to the first name. */
  readonly upstreamModel: string;
  readonly upstreams: readonly UpstreamServerConfig[];
  readonly balancing: BalancingPolicy;
  readonly timeouts: UpstreamTimeouts;
  readonly retries: UpstreamRetries;
  readonly health: UpstreamHealth;
  readonly prefixAffinity: PrefixAffinityConfig;
  /** Requests in flight across the pool beyond which new ones get 503. Default 4096. */
  readonly maxOutstanding: number;
}

export type ModelConfig = LocalModelConfig | UpstreamModelConfig;

type Json = Record<string, unknown>;

/** Reads values at a path, collecting nothing: the first problem throws with its path. */
class Reader {
  constructor(
    readonly file: string,
    readonly at: string,
    readonly value: Json,
  ) {}

  fail(key: string | null, message: string): never {
    const where = key === null ? this.at : this.at === "" ? key : `${this.at}.${key}`;
    throw new ConfigError(`${this.file}: ${where}: ${message}`);
  }

  /** Refuses keys this section does not know, so a typo is not silently ignored. */
  only(keys: readonly string[]): void {
    for (const key of Object.keys(this.value)) {
      if (!keys.includes(key)) this.fail(key, `unknown setting; expected one of ${keys.join(", ")}.`);
    }
  }

  string(key: string): string | undefined {
    const value = this.value[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "string" || value.trim() === "") this.fail(key, "must be a non-empty string.");
    return value;
  }

  number(key: string, min: number, max: number, integer = true): number | undefined {
    const value = this.value[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "number" || !Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max) {
      this.fail(key, `must be ${integer ? "an integer" : "a number"} between ${min} and ${max}, got ${JSON.stringify(value)}.`);
    }
    return value;
  }

  section(key: string): Reader {
    const value = this.value[key];
    if (value === undefined || value === null) return new Reader(this.file, this.path(key), {});
    if (typeof value !== "object" || Array.isArray(value)) this.fail(key, "must be a mapping.");
    return new Reader(this.file, this.path(key), value as Json);
  }

  list(key: string): Reader[] {
    const value = this.value[key];
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) this.fail(key, "must be a list.");
    return value.map((item: unknown, index) => {
      const at = `${this.path(key)}[${index}]`;
      if (typeof item !== "object" || item === null || Array.isArray(item)) throw new ConfigError(`${this.file}: ${at}: must be a mapping.`);
      return new Reader(this.file, at, item as Json);
    });
  }

  names(): string[] {
    const single = this.string("name");
    const many = this.value.names;
    if (many !== undefined && (!Array.isArray(many) || many.some((name) => typeof name !== "string" || name.trim() === ""))) {
      this.fail("names", "must be a list of non-empty strings.");
    }
    const names = [...(single === undefined ? [] : [single]), ...((many as string[] | undefined) ?? [])].map((name) => name.trim());
    return [...new Set(names)];
  }

  private path(key: string): string {
    return this.at === "" ? key : `${this.at}.${key}`;
  }
}

/** `${NAME}` → the variable's value, throughout the parsed document. */
function expandEnv(value: unknown, env: NodeJS.ProcessEnv, file: string, at: string): unknown {
  if (typeof value === "string") {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_match, name: string) => {
      const found = env[name];
      if (found === undefined) throw new ConfigError(`${file}: ${at}: the environment variable ${name} is not set.`);
      return found;
    });
  }
  if (Array.isArray(value)) return value.map((item, index) => expandEnv(item, env, file, `${at}[${index}]`));
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, expandEnv(item, env, file, at === "" ? key : `${at}.${key}`)]));
  }
  return value;
}

function upstreamUrl(reader: Reader): string {
  const raw = reader.string("url") ?? reader.fail("url", "is required (the server's OpenAI base URL, e.g. http://10.0.0.5:8000/v1).");
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    reader.fail("url", `is not a URL: '${raw}'.`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") reader.fail("url", "must be an http:// or https:// URL.");
  if (url.username !== "" || url.password !== "") reader.fail("url", "must not carry credentials; use api_key.");
  if (url.search !== "" || url.hash !== "") reader.fail("url", "must not have a query or fragment.");
  return url.toString().replace(/\/+$/, "");
}

function readLocal(reader: Reader, baseDir: string): LocalModelConfig {
  reader.only(["name", "names", "backend", "model", "threads", "context_size", "parallel", "queue_size", "queue_timeout_s"]);
  const source = reader.string("model");
  const timeout = reader.number("queue_timeout_s", 1, 86_400);
  return {
    backend: "local",
    // A relative path is relative to the config file, not to wherever `parley` was started.
    source: source === undefined || /^[a-z]+:/i.test(source) || path.isAbsolute(source) ? source : path.resolve(baseDir, source),
    names: reader.names(),
    threads: reader.number("threads", 1, 1024),
    contextSize: reader.number("context_size", 64, 1 << 24),
    parallel: reader.number("parallel", 1, 256) ?? 1,
    queueSize: reader.number("queue_size", 0, 1_000_000),
    queueTimeoutMs: timeout === undefined ? undefined : timeout * 1000,
  };
}

function readUpstream(reader: Reader): UpstreamModelConfig {
  reader.only(["name", "names", "backend", "upstream_model", "upstreams", "balancing", "timeouts", "retries", "health", "prefix_affinity", "max_outstanding"]);
  const names = reader.names();
  const servers = reader.list("upstreams").map((server): UpstreamServerConfig => {
    server.only(["url", "weight", "api_key"]);
    return { url: upstreamUrl(server), weight: server.number("weight", 0.01, 1000, false) ?? 1, apiKey: server.string("api_key") };
  });
  if (servers.length === 0) reader.fail("upstreams", "must list at least one server.");
  const urls = servers.map((server) => server.url);
  const repeated = urls.find((url, index) => urls.indexOf(url) !== index);
  if (repeated !== undefined) reader.fail("upstreams", `lists ${repeated} twice.`);
  const balancing = reader.string("balancing") ?? "least_outstanding";
  if (!BALANCING_POLICIES.includes(balancing as BalancingPolicy)) reader.fail("balancing", `must be one of ${BALANCING_POLICIES.join(", ")}.`);

  const timeouts = reader.section("timeouts");
  timeouts.only(["connect_ms", "first_token_ms", "idle_ms", "total_ms"]);
  const retries = reader.section("retries");
  retries.only(["max_attempts", "budget_ratio", "min_per_second", "max_retry_after_ms"]);
  const health = reader.section("health");
  health.only(["path", "interval_ms", "timeout_ms", "failure_threshold", "backoff_ms", "max_backoff_ms"]);
  const healthPath = health.string("path");
  if (healthPath !== undefined && !healthPath.startsWith("/")) health.fail("path", "must start with '/'.");
  const affinity = reader.section("prefix_affinity");
  affinity.only(["min_match", "balance_abs", "balance_rel", "block_chars", "max_blocks"]);
  const backoffMs = health.number("backoff_ms", 10, 3_600_000) ?? 2000;
  const maxBackoffMs = health.number("max_backoff_ms", 10, 3_600_000) ?? Math.max(60_000, backoffMs);
  if (maxBackoffMs < backoffMs) health.fail("max_backoff_ms", "must be at least backoff_ms.");

  return {
    backend: "upstream",
    names,
    upstreamModel: reader.string("upstream_model") ?? names[0] ?? "",
    upstreams: servers,
    balancing: balancing as BalancingPolicy,
    timeouts: {
      connectMs: timeouts.number("connect_ms", 1, 600_000) ?? 5000,
      firstTokenMs: timeouts.number("first_token_ms", 1, 3_600_000) ?? 60_000,
      idleMs: timeouts.number("idle_ms", 1, 3_600_000) ?? 30_000,
      totalMs: timeouts.number("total_ms", 1, 86_400_000) ?? 600_000,
    },
    retries: {
      maxAttempts: retries.number("max_attempts", 1, 10) ?? 3,
      budgetRatio: retries.number("budget_ratio", 0, 10, false) ?? 0.2,
      minPerSecond: retries.number("min_per_second", 0, 100_000, false) ?? 5,
      maxRetryAfterMs: retries.number("max_retry_after_ms", 0, 3_600_000) ?? 2000,
    },
    health: {
      path: healthPath,
      intervalMs: health.number("interval_ms", 0, 3_600_000) ?? 5000,
      timeoutMs: health.number("timeout_ms", 1, 600_000) ?? 2000,
      failureThreshold: health.number("failure_threshold", 1, 1000) ?? 3,
      backoffMs,
      maxBackoffMs,
    },
    prefixAffinity: {
      minMatch: affinity.number("min_match", 0, 1, false) ?? 0.5,
      balanceAbs: affinity.number("balance_abs", 0, 1_000_000) ?? 32,
      balanceRel: affinity.number("balance_rel", 1, 1000, false) ?? 1.5,
      blockChars: affinity.number("block_chars", 8, 1_000_000) ?? 64,
      maxBlocks: affinity.number("max_blocks", 1, 100_000_000) ?? 100_000,
    },
    maxOutstanding: reader.number("max_outstanding", 1, 10_000_000) ?? 4096,
  };
}

/** Parses the models of a config document (already read from `file`, which names it in errors). */
export function parseModelFile(text: string, file: string, env: NodeJS.ProcessEnv = process.env): ModelConfig[] {
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`${file}: not valid YAML: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (document === null || document === undefined) document = {};
  if (typeof document !== "object" || Array.isArray(document)) throw new ConfigError(`${file}: must be a mapping with a 'models' list.`);
  const root = new Reader(file, "", expandEnv(document, env, file, "") as Json);
  root.only(["models"]);
  const models = root.list("models").map((model) => {
    const backend = model.string("backend") ?? "local";
    if (model.names().length === 0 && backend === "upstream") model.fail("name", "is required.");
    if (backend === "local") return readLocal(model, path.dirname(path.resolve(file)));
    if (backend === "upstream") return readUpstream(model);
    return model.fail("backend", "must be 'local' or 'upstream'.");
  });
  const seen = new Set<string>();
  for (const model of models) {
    for (const name of model.names) {
      if (seen.has(name)) throw new ConfigError(`${file}: the model name '${name}' is used twice.`);
      seen.add(name);
    }
  }
  return models;
}

export function readModelFile(file: string, env: NodeJS.ProcessEnv = process.env): ModelConfig[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(`cannot read the config file ${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
  return parseModelFile(text, file, env);
}

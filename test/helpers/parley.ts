/**
 * A real Parley on an ephemeral loopback port, in this process, with a real model:
 * the same app, backend and engine that `parley serve` runs, without the CLI around it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { LlamaLogLevel, type Llama } from "node-llama-cpp";
import type { AccessControl } from "../../src/access/access-control.js";
import { openAccess } from "../../src/access/open-access.js";
import type { AccessConfig } from "../../src/config/access-config.js";
import { openEngine } from "../../src/backends/local/engine.js";
import { LocalBackend, type LocalModelOptions } from "../../src/backends/local/local-backend.js";
import { ModelRegistry } from "../../src/backends/registry.js";
import { SEED_RANGES, type ParameterRanges } from "../../src/protocol/parameters.js";
import { buildServer } from "../../src/server/app.js";
import { InFlight } from "../../src/server/in-flight.js";

let llama: Promise<Llama> | undefined;

/** One engine per test process, tuned as in the server. */
export function testLlama(): Promise<Llama> {
  llama ??= openEngine({ logLevel: LlamaLogLevel.error }).then((engine) => engine.llama);
  return llama;
}

/** Access control on a fresh SQLite file in a temp dir, with in-memory counters. */
export async function openTestAccess(
  staticKeys: readonly string[] = [],
  config: Partial<AccessConfig> = {},
): Promise<{ access: AccessControl; close(): Promise<void> }> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "parley-test-data-"));
  const access = await openAccess({ dataDir, databaseUrl: undefined, redisUrl: undefined, ...config }, staticKeys);
  return {
    access,
    close: async () => {
      await access.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface StartOptions extends Partial<Omit<LocalModelOptions, "modelPath">> {
  readonly modelPath: string;
  readonly aliases?: readonly string[];
  readonly apiKeys?: readonly string[];
  readonly ranges?: ParameterRanges;
  readonly bodyLimit?: number;
  /** Store and limiter; defaults to a fresh SQLite file in a temp dir and in-memory counters. */
  readonly accessConfig?: Partial<AccessConfig>;
  readonly adminToken?: string;
}

export interface RunningParley {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly backend: LocalBackend;
  readonly access: AccessControl;
  readonly inFlight: InFlight;
  close(): Promise<void>;
}

export async function startParley(options: StartOptions): Promise<RunningParley> {
  const backend = new LocalBackend(await testLlama(), {
    id: options.id ?? "test-model",
    modelPath: options.modelPath,
    threads: options.threads ?? 1,
    contextSize: options.contextSize,
    parallel: options.parallel,
    queueSize: options.queueSize,
    queueTimeoutMs: options.queueTimeoutMs,
    flashAttention: options.flashAttention,
  });
  await backend.load();
  const registry = new ModelRegistry();
  registry.add(backend, options.aliases ?? []);
  const { access, close: closeAccess } = await openTestAccess(options.apiKeys ?? [], options.accessConfig);
  const inFlight = new InFlight();
  const app = buildServer({
    registry,
    access,
    inFlight,
    ...(options.adminToken !== undefined ? { adminToken: options.adminToken } : {}),
    ranges: options.ranges ?? SEED_RANGES,
    ...(options.bodyLimit !== undefined ? { bodyLimit: options.bodyLimit } : {}),
    logger: false,
  });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  return {
    url,
    backend,
    access,
    inFlight,
    close: async () => {
      await app.close();
      await registry.dispose();
      await closeAccess();
    },
  };
}

/** POSTs JSON (or a raw string) to the chat completions route. */
export async function postChat(
  parley: { readonly url: string },
  body: unknown,
  init: { apiKey?: string; path?: string; headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json", ...init.headers };
  if (init.apiKey !== undefined) headers.authorization = `Bearer ${init.apiKey}`;
  return fetch(`${parley.url}${init.path ?? "/v1/chat/completions"}`, {
    method: "POST",
    headers,
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...(init.signal !== undefined ? { signal: init.signal } : {}),
  });
}

/** Reads an SSE response into its `data:` payloads, `[DONE]` included as the string. */
export async function readEvents(response: Response): Promise<unknown[]> {
  const text = await response.text();
  return text
    .split("\n\n")
    .filter((block) => block.trim().length > 0)
    .map((block) => {
      const data = block.replace(/^data: /, "");
      return data === "[DONE]" ? data : (JSON.parse(data) as unknown);
    });
}

/**
 * A real Parley on an ephemeral loopback port, in this process, with a real model:
 * the same app, backend and engine that `parley serve` runs, without the CLI around it.
 */
import { getLlama, LlamaLogLevel, type Llama } from "node-llama-cpp";
import { LocalBackend, type LocalModelOptions } from "../../src/backends/local/local-backend.js";
import { ModelRegistry } from "../../src/backends/registry.js";
import { SEED_RANGES, type ParameterRanges } from "../../src/protocol/parameters.js";
import { buildServer } from "../../src/server/app.js";

let llama: Promise<Llama> | undefined;

/** One engine per test process, as in the server. */
export function testLlama(): Promise<Llama> {
  llama ??= getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
  return llama;
}

export interface StartOptions extends Partial<Omit<LocalModelOptions, "modelPath">> {
  readonly modelPath: string;
  readonly aliases?: readonly string[];
  readonly apiKeys?: readonly string[];
  readonly ranges?: ParameterRanges;
  readonly bodyLimit?: number;
}

export interface RunningParley {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly backend: LocalBackend;
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
  });
  await backend.load();
  const registry = new ModelRegistry();
  registry.add(backend, options.aliases ?? []);
  const app = buildServer({
    registry,
    apiKeys: options.apiKeys ?? [],
    ranges: options.ranges ?? SEED_RANGES,
    ...(options.bodyLimit !== undefined ? { bodyLimit: options.bodyLimit } : {}),
    logger: false,
  });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  return {
    url,
    backend,
    close: async () => {
      await app.close();
      await registry.dispose();
    },
  };
}

/** POSTs JSON (or a raw string) to the chat completions route. */
export async function postChat(
  parley: RunningParley,
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

/**
 * Fixtures for the multi-tenant access suites at the server level:
 * - the three access configurations (SQLite + memory counters, PostgreSQL + memory,
 *   SQLite + Redis), each on a fresh database of its own (a PostgreSQL schema, a Redis key
 *   prefix) and removed afterwards;
 * - a real Parley in this process serving two models: `test-model` (stories260K, quick)
 *   and `slow-model` (a random-weights Qwen2 that never stops on its own before
 *   `max_tokens`, so a request on it stays in flight until the test lets it go), with a
 *   clock the test can freeze and a log it can read;
 * - ledger and SSE helpers.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { pino } from "pino";
import { AccessControl } from "../../src/access/access-control.js";
import { KeyService } from "../../src/access/key-service.js";
import type { KeySpec } from "../../src/access/key-spec.js";
import { openLimiter } from "../../src/access/open-limiter.js";
import { openStore } from "../../src/access/open-store.js";
import type { AccessStore } from "../../src/access/store.js";
import type { KeyLimits, LedgerRow } from "../../src/access/types.js";
import { LocalBackend } from "../../src/backends/local/local-backend.js";
import { ModelRegistry } from "../../src/backends/registry.js";
import { SEED_RANGES } from "../../src/protocol/parameters.js";
import { buildServer } from "../../src/server/app.js";
import { postgresDatabase } from "./access-store.js";
import { STORIES_260K, tinyQwen2 } from "./models.js";
import { testLlama } from "./parley.js";

/** The admin token of every server started here (at least 16 characters, as `serve` requires). */
export const ADMIN_TOKEN = "admin-token-for-tests-0123456789";

/** Generous bound for things that must happen "soon"; it turns a hang into a failure, it times nothing. */
export const DEADLINE_MS = 20_000;

/** Polls `probe` until it returns a value other than undefined; fails after DEADLINE_MS. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`still waiting for: ${what}`);
    await sleep(20);
  }
}

// ---------------------------------------------------------------------------------------
// Configurations

/** Where keys, the ledger and counters live for one run; `dispose` removes all of it. */
export interface AccessDatabase {
  readonly dataDir: string;
  readonly databaseUrl: string | undefined;
  readonly redisUrl: string | undefined;
  /** Prefix for this run's Redis keys (deleted by `dispose`). */
  readonly redisPrefix: string;
  dispose(): Promise<void>;
}

export interface AccessTarget {
  readonly name: string;
  /** Why the configuration cannot run here; undefined when it can. */
  readonly skip: string | undefined;
  fresh(): Promise<AccessDatabase>;
}

const NO_POSTGRES = "TEST_DATABASE_URL is not set: run under scripts/with-services.sh to start a throw-away PostgreSQL";
const NO_REDIS = "TEST_REDIS_URL is not set: run under scripts/with-services.sh to start a throw-away Redis";

async function freshDatabase(kind: { postgres: boolean; redis: boolean }): Promise<AccessDatabase> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "parley-access-"));
  const pgDatabase = kind.postgres ? await postgresDatabase(requiredEnv("TEST_DATABASE_URL")) : undefined;
  const redisUrl = kind.redis ? requiredEnv("TEST_REDIS_URL") : undefined;
  const redisPrefix = `parley-test-${randomBytes(6).toString("hex")}:`;
  return {
    dataDir,
    databaseUrl: pgDatabase?.options.databaseUrl,
    redisUrl,
    redisPrefix,
    dispose: async () => {
      if (redisUrl !== undefined) await deleteRedisKeys(redisUrl, `${redisPrefix}*`);
      await pgDatabase?.dispose();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

function requiredEnv(name: string): string {
  const value = process.env[name];
  assert.ok(value !== undefined && value !== "", `${name} is not set`);
  return value;
}

/** Deletes every key matching `pattern` (SCAN, never KEYS). */
export async function deleteRedisKeys(redisUrl: string, pattern: string): Promise<void> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect();
  }
}

const hasPostgres = (): boolean => (process.env.TEST_DATABASE_URL ?? "") !== "";
const hasRedis = (): boolean => (process.env.TEST_REDIS_URL ?? "") !== "";

/** SQLite + memory always; PostgreSQL + memory and SQLite + Redis when the services are there. */
export const ACCESS_TARGETS: readonly AccessTarget[] = [
  { name: "SQLite + memory counters", skip: undefined, fresh: () => freshDatabase({ postgres: false, redis: false }) },
  {
    name: "PostgreSQL + memory counters",
    skip: hasPostgres() ? undefined : NO_POSTGRES,
    fresh: () => freshDatabase({ postgres: true, redis: false }),
  },
  {
    name: "SQLite + Redis counters",
    skip: hasRedis() ? undefined : NO_REDIS,
    fresh: () => freshDatabase({ postgres: false, redis: true }),
  },
];

/** A fresh PostgreSQL schema (its URL selects it through search_path), or the reason there is none. */
export async function freshPostgres(): Promise<{ url: string; dispose(): Promise<void> } | { skip: string }> {
  if (!hasPostgres()) return { skip: NO_POSTGRES };
  const database = await postgresDatabase(requiredEnv("TEST_DATABASE_URL"));
  return { url: database.options.databaseUrl ?? "", dispose: () => database.dispose() };
}

export { hasPostgres, hasRedis, NO_POSTGRES, NO_REDIS };

// ---------------------------------------------------------------------------------------
// The server

/** The time AccessControl (auth expiry, admission) sees: real time unless frozen. */
export class TestClock {
  #frozen: number | null = null;
  readonly now = (): number => this.#frozen ?? Date.now();
  /** Stops the clock at `at` (default: now); admissions then see no time pass. */
  freeze(at: number = Date.now()): void {
    this.#frozen = at;
  }
  thaw(): void {
    this.#frozen = null;
  }
}

export interface AccessParley {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly access: AccessControl;
  readonly store: AccessStore;
  readonly keys: KeyService;
  readonly clock: TestClock;
  readonly quick: LocalBackend;
  readonly slow: LocalBackend;
  /** Every log line the server wrote, as written (JSON lines). */
  logs(): string;
  close(): Promise<void>;
}

export const QUICK_MODEL = "test-model";
export const SLOW_MODEL = "slow-model";
/** Tokens `slow-model` may generate: far more than any test waits for. */
export const SLOW_MAX_TOKENS = 16_000;

/**
 * A Parley on `database`, wired as `parley serve` wires it (the same app, access control,
 * store and limiter), with the admin API on unless `adminToken` is null.
 */
export async function startAccessParley(
  database: AccessDatabase,
  options: { adminToken?: string | null } = {},
): Promise<AccessParley> {
  const llama = await testLlama();
  const quick = new LocalBackend(llama, { id: QUICK_MODEL, modelPath: STORIES_260K, threads: 1, parallel: 1, queueSize: 256 });
  const slow = new LocalBackend(llama, { id: SLOW_MODEL, modelPath: await tinyQwen2(), threads: 1, parallel: 1, queueSize: 8, contextSize: SLOW_MAX_TOKENS + 256 });
  await Promise.all([quick.load(), slow.load()]);
  const registry = new ModelRegistry();
  registry.add(quick);
  registry.add(slow);

  const store = await openStore({ dataDir: database.dataDir, databaseUrl: database.databaseUrl });
  const clock = new TestClock();
  let access: AccessControl;
  try {
    const limiter = await openLimiter({
      ...(database.redisUrl !== undefined ? { redisUrl: database.redisUrl, keyPrefix: database.redisPrefix } : {}),
      budgetSeed: (keyId, since) => store.tokensUsed(keyId, since),
    });
    access = new AccessControl({ store, limiter, staticKeys: [], now: clock.now });
  } catch (error) {
    await store.close();
    throw error;
  }

  let logged = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logged += chunk.toString("utf8");
      done();
    },
  });
  // As `parley serve` configures its logger (src/cli/serve.ts).
  const log = pino({ level: "info", redact: ["req.headers.authorization"] }, sink);
  const adminToken = options.adminToken === undefined ? ADMIN_TOKEN : options.adminToken;
  const app = buildServer({
    registry,
    access,
    ...(adminToken !== null ? { adminToken } : {}),
    ranges: { ...SEED_RANGES, max_tokens: { min: 1, max: SLOW_MAX_TOKENS } },
    loggerInstance: log,
  });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  return {
    url,
    access,
    store,
    keys: new KeyService(store),
    clock,
    quick,
    slow,
    logs: () => logged,
    close: async () => {
      await app.close();
      await registry.dispose();
      await access.close();
    },
  };
}

// ---------------------------------------------------------------------------------------
// Requests

export const NO_LIMITS: Omit<KeySpec, "name"> = {
  models: null,
  rpm: null,
  tpm: null,
  maxConcurrent: null,
  budgetTokens: null,
  budgetPeriod: null,
  expiresAt: null,
};

/** Creates a key straight through KeyService (as `parley keys create` does) and tells the server. */
export async function createKey(parley: AccessParley, limits: Partial<KeyLimits> = {}, name = "test key"): Promise<{ id: string; secret: string }> {
  const issued = await parley.keys.create({ ...NO_LIMITS, ...limits, name });
  parley.access.keysChanged();
  return { id: issued.record.id, secret: issued.secret };
}

let requestSequence = 0;
/** A request id of our own, to find the request's ledger row. */
export function requestId(label: string): string {
  requestSequence += 1;
  return `${label}-${requestSequence}-${randomBytes(4).toString("hex")}`;
}

export function chat(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: QUICK_MODEL, messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 4, ...overrides };
}

export async function post(
  url: string,
  body: unknown,
  init: { secret?: string | undefined; id?: string; signal?: AbortSignal; headers?: Record<string, string> } = {},
): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json", ...init.headers };
  if (init.secret !== undefined) headers.authorization = `Bearer ${init.secret}`;
  if (init.id !== undefined) headers["x-request-id"] = init.id;
  return fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers,
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...(init.signal !== undefined ? { signal: init.signal } : {}),
  });
}

/** An admin API call with the admin token (or `token`); JSON in and out. */
export async function admin(
  url: string,
  method: string,
  route: string,
  body?: unknown,
  token: string | null = ADMIN_TOKEN,
): Promise<{ status: number; body: any; headers: Headers; text: string }> {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`${url}${route}`, {
    method,
    headers,
    ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: response.status, body: parsed, headers: response.headers, text };
}

/** A stream read until its first text arrives: generation is running, the request is in flight. */
export interface OpenStream {
  readonly response: Response;
  /** Aborts the fetch and drops the connection. */
  abort(): Promise<void>;
}

export async function openStream(url: string, body: Record<string, unknown>, init: { secret?: string; id?: string } = {}): Promise<OpenStream> {
  const controller = new AbortController();
  const response = await post(url, { ...body, stream: true }, { ...init, signal: controller.signal });
  assert.equal(response.status, 200, `the stream started (status ${response.status})`);
  assert.ok(response.body !== null);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let text = "";
  while (text.length === 0) {
    const { value, done } = await reader.read();
    assert.ok(done !== true, "the stream ended before any text");
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split("\n\n");
    buffer = events.pop() ?? "";
    for (const event of events) {
      const data = event.replace(/^data: /, "");
      if (data === "[DONE]") continue;
      const parsed = JSON.parse(data) as { choices?: Array<{ delta?: { content?: string } }> };
      text += parsed.choices?.[0]?.delta?.content ?? "";
    }
  }
  return {
    response,
    abort: async () => {
      controller.abort();
      await reader.cancel().catch(() => undefined);
    },
  };
}

/** A request that waits in a backend's queue: its fetch resolves once it runs. */
export function enqueue(url: string, body: Record<string, unknown>, init: { secret?: string; id?: string } = {}) {
  const controller = new AbortController();
  const settled = post(url, body, { ...init, signal: controller.signal }).then(
    async (response) => {
      await response.body?.cancel().catch(() => undefined);
      return response;
    },
    (error: unknown) => error,
  );
  return { controller, settled };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number };
}

/** A complete SSE stream: its chunks, the usage chunk (if asked for) and whether `[DONE]` came. */
export async function readStream(response: Response): Promise<{ chunks: any[]; usage: Usage | undefined; done: boolean; finishReason: string | null }> {
  const text = await response.text();
  const events = text.split("\n\n").filter((block) => block.trim().length > 0).map((block) => block.replace(/^data: /, ""));
  const done = events.at(-1) === "[DONE]";
  const chunks = events.filter((event) => event !== "[DONE]").map((event) => JSON.parse(event) as any);
  const usage = chunks.find((chunk) => chunk.usage !== undefined && chunk.usage !== null)?.usage as Usage | undefined;
  const finishReason = (chunks.map((chunk) => chunk.choices?.[0]?.finish_reason).find((reason) => typeof reason === "string") as string | undefined) ?? null;
  return { chunks, usage, done, finishReason };
}

// ---------------------------------------------------------------------------------------
// The ledger

/** Every ledger row whose request id is one of `ids` (through the store's own reader). */
export async function ledgerRows(store: AccessStore, ids: Iterable<string>): Promise<Map<string, LedgerRow[]>> {
  const wanted = new Set(ids);
  const rows = await store.recentRequests(1_000_000);
  const found = new Map<string, LedgerRow[]>();
  for (const row of rows) {
    if (!wanted.has(row.requestId)) continue;
    found.set(row.requestId, [...(found.get(row.requestId) ?? []), row]);
  }
  return found;
}

/** The one row of a request, waiting for it (an abandoned request's row is written after the client left). */
export async function oneRow(store: AccessStore, id: string): Promise<LedgerRow> {
  const rows = await eventually(`the ledger row of ${id}`, async () => (await ledgerRows(store, [id])).get(id));
  assert.equal(rows.length, 1, `exactly one ledger row for ${id}: ${JSON.stringify(rows)}`);
  return rows[0] as LedgerRow;
}

/**
 * Fixtures for the access-store suite: fresh databases (a SQLite directory, or a
 * PostgreSQL schema of its own), record builders, and a second process that opens the
 * same store.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import pg from "pg";
import type { OpenStoreOptions } from "../../src/access/open-store.js";
import type { ApiKeyRecord, LedgerRow, UsageBucket } from "../../src/access/types.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** One fresh, empty database. */
export interface TestDatabase {
  readonly options: OpenStoreOptions;
  /** The versions recorded in schema_migrations, ascending, duplicates kept. */
  versions(): Promise<number[]>;
  dispose(): Promise<void>;
}

export async function sqliteDatabase(): Promise<TestDatabase> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "parley-store-"));
  return {
    options: { dataDir },
    versions: async () => {
      const db = new Database(path.join(dataDir, "parley.db"), { readonly: true });
      try {
        return db.prepare("SELECT version FROM schema_migrations ORDER BY version").pluck().all() as number[];
      } finally {
        db.close();
      }
    },
    dispose: () => rm(dataDir, { recursive: true, force: true }),
  };
}

/** A schema `parley_test_<random>` on the server at `adminUrl`, selected through the URL's search_path. */
export async function postgresDatabase(adminUrl: string): Promise<TestDatabase> {
  const schema = `parley_test_${randomBytes(6).toString("hex")}`;
  const admin = async <T>(work: (client: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end();
    }
  };
  await admin((client) => client.query(`CREATE SCHEMA ${schema}`));
  const url = new URL(adminUrl);
  url.searchParams.set("options", `-c search_path=${schema}`);
  return {
    options: { databaseUrl: url.toString(), dataDir: path.join(os.tmpdir(), "parley-unused") },
    versions: () =>
      admin(async (client) => {
        const result = await client.query<{ version: number }>(
          `SELECT version FROM ${schema}.schema_migrations ORDER BY version`,
        );
        return result.rows.map((row) => row.version);
      }),
    dispose: async () => {
      await admin((client) => client.query(`DROP SCHEMA ${schema} CASCADE`));
    },
  };
}

export function at(iso: string): Date {
  return new Date(iso);
}

export function key(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id: "key_0123456789abcdef",
    name: "alice",
    prefix: "sk-pl-4f9A",
    hash: "0".repeat(64),
    models: null,
    rpm: null,
    tpm: null,
    maxConcurrent: null,
    budgetTokens: null,
    budgetPeriod: null,
    expiresAt: null,
    createdAt: at("2024-03-01T00:00:00.000Z"),
    revokedAt: null,
    ...overrides,
  };
}

export function row(overrides: Partial<LedgerRow> = {}): LedgerRow {
  return {
    requestId: "req-1",
    keyId: null,
    model: "m1",
    promptTokens: 0,
    completionTokens: 0,
    cachedTokens: 0,
    status: 200,
    outcome: "completed",
    finishReason: "stop",
    timeToFirstTokenMs: 12.25,
    durationMs: 345.678,
    createdAt: at("2024-03-09T10:00:00.000Z"),
    ...overrides,
  };
}

export function bucket(group: string, requests: number, prompt: number, completion: number, cached: number): UsageBucket {
  return { group, requests, promptTokens: prompt, completionTokens: completion, cachedTokens: cached, totalTokens: prompt + completion };
}

/** `length` code points from CJK, emoji and accented Latin: too varied to compress into a B-tree entry. */
export function unicodeNoise(length: number): string {
  const bases = [0x4e00, 0x1f600, 0xe0];
  return Array.from({ length }, (_, index) =>
    String.fromCodePoint((bases[index % 3] ?? 0x4e00) + ((index * 7919) % 80)),
  ).join("");
}

/**
 * What the second process does with the store it opened:
 * - `migrate`: prints `migrated` and exits (opening migrates);
 * - `append`: appends ledger rows `durable-0`, `durable-1`, … four at a time (appended in
 *   the same tick, so a store that commits them together is tested too) and prints
 *   `appended <requestId>` as soon as each append has resolved, until killed. Writes to a
 *   pipe are synchronous on Linux, so a printed line means the append had resolved.
 */
export type ChildMode = "migrate" | "append";

const CHILD_SOURCE = (mode: ChildMode, options: OpenStoreOptions): string => `
  import { openStore } from ${JSON.stringify(pathToFileURL(path.join(ROOT, "src/access/open-store.ts")).href)};
  setTimeout(() => process.exit(3), 60_000).unref(); // never outlive a test that forgot it
  const store = await openStore(${JSON.stringify(options)});
  if (${JSON.stringify(mode)} === "migrate") {
    process.stdout.write("migrated\\n");
    await store.close();
  } else {
    for (let index = 0; ; index += 4) {
      await Promise.all([0, 1, 2, 3].map(async (offset) => {
        const requestId = "durable-" + (index + offset);
        await store.appendLedger({ requestId, keyId: null, model: "durable-model", promptTokens: 3,
          completionTokens: 4, cachedTokens: 0, status: 200, outcome: "completed", finishReason: "stop",
          timeToFirstTokenMs: 1.5, durationMs: 2.5, createdAt: new Date() });
        process.stdout.write("appended " + requestId + "\\n");
      }));
    }
  }
`;

export interface ChildStore {
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  stdout(): string;
  stderr(): string;
}

/** Opens the store described by `options` in another Node process (`node --import tsx -e`). */
export function runChildStore(mode: ChildMode, options: OpenStoreOptions): ChildStore {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--input-type=module", "-e", CHILD_SOURCE(mode, options)],
    { cwd: ROOT, stdio: "pipe" },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (data: Buffer) => (stdout += data.toString("utf8")));
  child.stderr.on("data", (data: Buffer) => (stderr += data.toString("utf8")));
  const exited = once(child, "exit").then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as string | null,
  }));
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

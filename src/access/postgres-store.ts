/**
 * The access store for several Parley replicas: PostgreSQL through a `pg` connection pool.
 * Every statement is parameterized. A write is one autocommitted statement, so it is
 * durable (committed, and flushed under the server's default `synchronous_commit`) when
 * its promise resolves.
 */
import pg from "pg";
import { pendingMigrations } from "./migrations.js";
import { LEDGER_COLUMNS, ledgerValues, StoreConflictError, type AccessStore } from "./store.js";
import type {
  ApiKeyRecord,
  BudgetPeriod,
  LedgerOutcome,
  LedgerRow,
  UsageBucket,
  UsageGrouping,
  UsageQuery,
} from "./types.js";

/** Names this application's advisory lock: "parley" in ASCII. */
const MIGRATION_LOCK = 0x7061726c6579;

/** bigint and numeric columns arrive as strings (they may exceed 2^53); counts here do not. */
type Int = string;

interface KeyRow {
  id: string;
  name: string;
  prefix: string;
  hash: string;
  models: string[] | null;
  rpm: Int | null;
  tpm: Int | null;
  max_concurrent: Int | null;
  budget_tokens: Int | null;
  budget_period: string | null;
  expires_at: Date | null;
  created_at: Date;
  revoked_at: Date | null;
}

interface LedgerDbRow {
  request_id: string;
  key_id: string | null;
  model: string | null;
  prompt_tokens: Int;
  completion_tokens: Int;
  cached_tokens: Int;
  status: Int;
  outcome: string;
  finish_reason: string | null;
  ttft_ms: number | null;
  duration_ms: number;
  created_at: Date;
}

interface BucketRow {
  grp: string;
  requests: Int;
  prompt: Int;
  completion: Int;
  cached: Int;
}

const GROUP_EXPRESSIONS: Record<UsageGrouping, string> = {
  day: "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
  key: "coalesce(key_id, '(none)')",
  model: "coalesce(model, '(none)')",
  none: "'all'::text",
};

export class PostgresStore implements AccessStore {
  readonly #pool: pg.Pool;
  #closed: Promise<void> | undefined;

  /** Takes ownership of `pool`: `close()` ends it. */
  constructor(pool: pg.Pool) {
    this.#pool = pool;
    // An idle connection that the server drops is discarded by the pool, and the next
    // query opens a new one; without a listener the event would crash the process.
    pool.on("error", () => {});
  }

  async migrate(): Promise<void> {
    const client = await this.#pool.connect();
    let broken = false;
    try {
      await client.query("BEGIN");
      // Held until COMMIT: a second process starting at the same moment waits here, then
      // finds the migrations applied.
      await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)`);
      const applied = await client.query<{ version: number }>("SELECT version FROM schema_migrations");
      for (const migration of pendingMigrations(applied.rows.map((row) => row.version))) {
        await client.query(migration.postgres);
        await client.query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)", [
          migration.version,
          migration.name,
          new Date(),
        ]);
      }
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {
        broken = true;
      });
      throw error;
    } finally {
      client.release(broken);
    }
  }

  async createKey(record: ApiKeyRecord): Promise<void> {
    try {
      await this.#pool.query(
        `INSERT INTO keys (id, name, prefix, hash, models, rpm, tpm, max_concurrent,
           budget_tokens, budget_period, expires_at, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
        [
          record.id,
          record.name,
          record.prefix,
          record.hash,
          record.models === null ? null : JSON.stringify(record.models),
          record.rpm,
          record.tpm,
          record.maxConcurrent,
          record.budgetTokens,
          record.budgetPeriod,
          validDate(record.expiresAt),
          validDate(record.createdAt),
          validDate(record.revokedAt),
        ],
      );
    } catch (error) {
      throw conflictOr(error, record.id);
    }
  }

  async findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    return this.#oneKey("SELECT * FROM keys WHERE hash = $1", [hash]);
  }

  async getKey(id: string): Promise<ApiKeyRecord | undefined> {
    return this.#oneKey("SELECT * FROM keys WHERE id = $1", [id]);
  }

  async listKeys(): Promise<ApiKeyRecord[]> {
    // COLLATE "C" orders by code point, as SQLite does, whatever the database's locale.
    const result = await this.#pool.query<KeyRow>('SELECT * FROM keys ORDER BY created_at, id COLLATE "C"');
    return result.rows.map(keyFrom);
  }

  async revokeKey(id: string, at: Date): Promise<ApiKeyRecord | undefined> {
    return this.#oneKey("UPDATE keys SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2 RETURNING *", [
      validDate(at),
      id,
    ]);
  }

  async replaceKeySecret(id: string, hash: string, prefix: string): Promise<ApiKeyRecord | undefined> {
    try {
      return await this.#oneKey("UPDATE keys SET hash = $1, prefix = $2 WHERE id = $3 RETURNING *", [
        hash,
        prefix,
        id,
      ]);
    } catch (error) {
      throw conflictOr(error, id);
    }
  }

  async hasKeys(): Promise<boolean> {
    const result = await this.#pool.query<{ found: boolean }>("SELECT EXISTS (SELECT 1 FROM keys) AS found");
    return result.rows[0]?.found === true;
  }

  async appendLedger(row: LedgerRow): Promise<void> {
    await this.#pool.query(
      `INSERT INTO ledger (${LEDGER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
      ledgerValues(row, validDate),
    );
  }

  async usage(query: UsageQuery): Promise<UsageBucket[]> {
    const conditions: string[] = [];
    const values: Array<string | Date> = [];
    const filter = (condition: (parameter: string) => string, value: string | Date): void => {
      values.push(value);
      conditions.push(condition(`$${values.length}`));
    };
    if (query.keyId !== undefined) filter((p) => `key_id = ${p}`, query.keyId);
    // The left(...) term lets the planner use the index, which covers 200 characters.
    if (query.model !== undefined) filter((p) => `left(model, 200) = left(${p}, 200) AND model = ${p}`, query.model);
    if (query.since !== undefined) filter((p) => `created_at >= ${p}`, validDate(query.since));
    if (query.until !== undefined) filter((p) => `created_at < ${p}`, validDate(query.until));
    const where = conditions.length === 0 ? "" : `WHERE ${conditions.join(" AND ")}`;
    const result = await this.#pool.query<BucketRow>(
      `SELECT * FROM (
         SELECT ${GROUP_EXPRESSIONS[query.groupBy]} AS grp, count(*) AS requests,
           sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
           sum(cached_tokens) AS cached
         FROM ledger ${where} GROUP BY 1
       ) AS buckets ORDER BY grp COLLATE "C"`,
      values,
    );
    return result.rows.map((row) => {
      const prompt = Number(row.prompt);
      const completion = Number(row.completion);
      return {
        group: row.grp,
        requests: Number(row.requests),
        promptTokens: prompt,
        completionTokens: completion,
        cachedTokens: Number(row.cached),
        totalTokens: prompt + completion,
      };
    });
  }

  async tokensUsed(keyId: string, since: Date | null): Promise<number> {
    const total = "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) AS used FROM ledger WHERE key_id = $1";
    const result =
      since === null
        ? await this.#pool.query<{ used: Int }>(total, [keyId])
        : await this.#pool.query<{ used: Int }>(`${total} AND created_at >= $2`, [keyId, validDate(since)]);
    return Number(result.rows[0]?.used ?? 0);
  }

  async recentRequests(limit: number): Promise<LedgerRow[]> {
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new RangeError(`limit must be a non-negative integer, got ${limit}`);
    }
    const result = await this.#pool.query<LedgerDbRow>(
      "SELECT * FROM ledger ORDER BY created_at DESC, id DESC LIMIT $1",
      [limit],
    );
    return result.rows.map((row) => ({
      requestId: row.request_id,
      keyId: row.key_id,
      model: row.model,
      promptTokens: Number(row.prompt_tokens),
      completionTokens: Number(row.completion_tokens),
      cachedTokens: Number(row.cached_tokens),
      status: Number(row.status),
      outcome: row.outcome as LedgerOutcome,
      finishReason: row.finish_reason,
      timeToFirstTokenMs: row.ttft_ms,
      durationMs: row.duration_ms,
      createdAt: row.created_at,
    }));
  }

  /** Idempotent; waits for queries in flight. */
  async close(): Promise<void> {
    this.#closed ??= this.#pool.end();
    await this.#closed;
  }

  async #oneKey(sql: string, values: unknown[]): Promise<ApiKeyRecord | undefined> {
    const result = await this.#pool.query<KeyRow>(sql, values);
    const row = result.rows[0];
    return row === undefined ? undefined : keyFrom(row);
  }
}

/** Refused here as SQLite's store refuses it; `pg` would send it as text PostgreSQL rejects. */
function validDate<T extends Date | null>(date: T): T {
  if (date !== null && Number.isNaN(date.getTime())) throw new RangeError("date must be a valid Date, got Invalid Date");
  return date;
}

function intOrNull(value: Int | null): number | null {
  return value === null ? null : Number(value);
}

function keyFrom(row: KeyRow): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    hash: row.hash,
    models: row.models,
    rpm: intOrNull(row.rpm),
    tpm: intOrNull(row.tpm),
    maxConcurrent: intOrNull(row.max_concurrent),
    budgetTokens: intOrNull(row.budget_tokens),
    budgetPeriod: row.budget_period as BudgetPeriod | null,
    expiresAt: row.expires_at,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
  };
}

function conflictOr(error: unknown, id: string): unknown {
  if (!(error instanceof pg.DatabaseError) || error.code !== "23505") return error;
  return error.constraint === "keys_pkey"
    ? new StoreConflictError(`a key with id ${id} already exists`)
    : new StoreConflictError("a key with the same secret hash already exists");
}

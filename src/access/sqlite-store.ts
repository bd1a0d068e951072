/**
 * The default access store: one SQLite file (better-sqlite3), in WAL mode with
 * `synchronous = NORMAL`. A committed transaction is then in the operating system's
 * hands before the call returns, so it survives the process being killed (SIGKILL);
 * only a power loss or kernel crash can take the last commits. Every call is
 * synchronous underneath and wrapped in a promise to fit `AccessStore`.
 *
 * Ledger rows are group-committed: the rows appended in one turn of the event loop are
 * inserted in one transaction at the end of that turn (`setImmediate`), and each row's
 * promise resolves only after that commit. Under load this shares the transaction and its
 * WAL pages among many requests; alone, a row waits only for the rest of its turn.
 */
import Database from "better-sqlite3";
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

export interface SqliteStoreOptions {
  /** How long a write waits for another process's lock before failing, in ms. Defaults to `5000`. */
  readonly busyTimeoutMs?: number;
}

interface KeyRow {
  id: string;
  name: string;
  prefix: string;
  hash: string;
  models: string | null;
  rpm: number | null;
  tpm: number | null;
  max_concurrent: number | null;
  budget_tokens: number | null;
  budget_period: string | null;
  expires_at: number | null;
  created_at: number;
  revoked_at: number | null;
}

interface LedgerDbRow {
  request_id: string;
  key_id: string | null;
  model: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
  status: number;
  outcome: string;
  finish_reason: string | null;
  ttft_ms: number | null;
  duration_ms: number;
  created_at: number;
}

interface BucketRow {
  grp: string;
  requests: number;
  prompt: number;
  completion: number;
  cached: number;
}

const GROUP_EXPRESSIONS: Record<UsageGrouping, string> = {
  day: "date(created_at / 1000.0, 'unixepoch')",
  key: "coalesce(key_id, '(none)')",
  model: "coalesce(model, '(none)')",
  none: "'all'",
};

type LedgerParameters = ReturnType<typeof ledgerValues<number>>;

interface QueuedRow {
  readonly parameters: LedgerParameters;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

const INSERT_LEDGER = `INSERT INTO ledger (${LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

export class SqliteStore implements AccessStore {
  readonly #db: Database.Database;
  readonly #statements = new Map<string, Database.Statement>();
  /** Ledger rows waiting for this turn's group commit. */
  #queued: QueuedRow[] = [];
  readonly #insertAll: Database.Transaction<(batch: readonly QueuedRow[]) => void>;

  /** Opens (creating if needed) the database file; call `migrate()` before use. */
  constructor(file: string, options: SqliteStoreOptions = {}) {
    this.#db = new Database(file, { timeout: options.busyTimeoutMs ?? 5000 });
    try {
      this.#db.pragma("journal_mode = WAL");
      this.#db.pragma("synchronous = NORMAL");
      this.#db.pragma("foreign_keys = ON");
    } catch (error) {
      this.#db.close();
      throw error;
    }
    this.#insertAll = this.#db.transaction((batch: readonly QueuedRow[]) => {
      const insert = this.#statement(INSERT_LEDGER);
      for (const queued of batch) insert.run(...queued.parameters);
    });
  }

  async migrate(): Promise<void> {
    // IMMEDIATE takes the write lock before reading the applied versions, so a second
    // process starting at the same moment waits (busy timeout) and then finds them applied.
    this.#db
      .transaction(() => {
        this.#db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
          version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`);
        const applied = this.#db
          .prepare("SELECT version FROM schema_migrations")
          .pluck()
          .all() as number[];
        const record = this.#db.prepare(
          "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        );
        for (const migration of pendingMigrations(applied)) {
          this.#db.exec(migration.sqlite);
          record.run(migration.version, migration.name, Date.now());
        }
      })
      .immediate();
  }

  async createKey(record: ApiKeyRecord): Promise<void> {
    try {
      this.#statement(
        `INSERT INTO keys (id, name, prefix, hash, models, rpm, tpm, max_concurrent,
           budget_tokens, budget_period, expires_at, created_at, revoked_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        record.id,
        record.name,
        record.prefix,
        record.hash,
        record.models === null ? null : JSON.stringify(record.models),
        notNaN(record.rpm, "rpm"),
        notNaN(record.tpm, "tpm"),
        notNaN(record.maxConcurrent, "maxConcurrent"),
        notNaN(record.budgetTokens, "budgetTokens"),
        record.budgetPeriod,
        millisOrNull(record.expiresAt),
        millis(record.createdAt),
        millisOrNull(record.revokedAt),
      );
    } catch (error) {
      throw conflictOr(error, record.id);
    }
  }

  async findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    return keyFrom(this.#statement("SELECT * FROM keys WHERE hash = ?").get(hash) as KeyRow | undefined);
  }

  async getKey(id: string): Promise<ApiKeyRecord | undefined> {
    return keyFrom(this.#statement("SELECT * FROM keys WHERE id = ?").get(id) as KeyRow | undefined);
  }

  async listKeys(): Promise<ApiKeyRecord[]> {
    const rows = this.#statement("SELECT * FROM keys ORDER BY created_at, id").all() as KeyRow[];
    return rows.map((row) => keyFrom(row) as ApiKeyRecord);
  }

  async revokeKey(id: string, at: Date): Promise<ApiKeyRecord | undefined> {
    const row = this.#statement(
      "UPDATE keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? RETURNING *",
    ).get(millis(at), id) as KeyRow | undefined;
    return keyFrom(row);
  }

  async replaceKeySecret(id: string, hash: string, prefix: string): Promise<ApiKeyRecord | undefined> {
    try {
      const row = this.#statement("UPDATE keys SET hash = ?, prefix = ? WHERE id = ? RETURNING *").get(
        hash,
        prefix,
        id,
      ) as KeyRow | undefined;
      return keyFrom(row);
    } catch (error) {
      throw conflictOr(error, id);
    }
  }

  async hasKeys(): Promise<boolean> {
    return this.#statement("SELECT EXISTS (SELECT 1 FROM keys)").pluck().get() === 1;
  }

  appendLedger(row: LedgerRow): Promise<void> {
    let parameters: LedgerParameters;
    try {
      parameters = ledgerValues(row, millis);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#queued.push({ parameters, resolve, reject });
      if (this.#queued.length === 1) setImmediate(() => this.#commitQueued());
    });
  }

  /**
   * Inserts every queued row in one transaction, then resolves their promises. If the
   * transaction fails (one row breaks a constraint, say), each row is retried on its own
   * so that only the rows that fail are rejected.
   */
  #commitQueued(): void {
    const batch = this.#queued;
    if (batch.length === 0) return;
    this.#queued = [];
    if (batch.length > 1) {
      try {
        this.#insertAll.immediate(batch);
      } catch {
        for (const queued of batch) this.#commitOne(queued);
        return;
      }
      for (const queued of batch) queued.resolve();
      return;
    }
    this.#commitOne(batch[0] as QueuedRow);
  }

  #commitOne(queued: QueuedRow): void {
    try {
      this.#statement(INSERT_LEDGER).run(...queued.parameters);
    } catch (error) {
      queued.reject(error);
      return;
    }
    queued.resolve();
  }

  async usage(query: UsageQuery): Promise<UsageBucket[]> {
    const conditions: string[] = [];
    const values: Array<string | number> = [];
    const filter = (condition: string, value: string | number): void => {
      conditions.push(condition);
      values.push(value);
    };
    if (query.keyId !== undefined) filter("key_id = ?", query.keyId);
    if (query.model !== undefined) filter("model = ?", query.model);
    if (query.since !== undefined) filter("created_at >= ?", millis(query.since));
    if (query.until !== undefined) filter("created_at < ?", millis(query.until));
    const where = conditions.length === 0 ? "" : `WHERE ${conditions.join(" AND ")}`;
    const rows = this.#statement(
      `SELECT ${GROUP_EXPRESSIONS[query.groupBy]} AS grp, count(*) AS requests,
         sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
         sum(cached_tokens) AS cached
       FROM ledger ${where} GROUP BY 1 ORDER BY 1`,
    ).all(...values) as BucketRow[];
    return rows.map((row) => ({
      group: row.grp,
      requests: row.requests,
      promptTokens: row.prompt,
      completionTokens: row.completion,
      cachedTokens: row.cached,
      totalTokens: row.prompt + row.completion,
    }));
  }

  async tokensUsed(keyId: string, since: Date | null): Promise<number> {
    const total = "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM ledger WHERE key_id = ?";
    const used =
      since === null
        ? this.#statement(total).pluck().get(keyId)
        : this.#statement(`${total} AND created_at >= ?`).pluck().get(keyId, millis(since));
    return used as number;
  }

  async recentRequests(limit: number): Promise<LedgerRow[]> {
    checkLimit(limit);
    const rows = this.#statement(
      "SELECT * FROM ledger ORDER BY created_at DESC, id DESC LIMIT ?",
    ).all(limit) as LedgerDbRow[];
    return rows.map((row) => ({
      requestId: row.request_id,
      keyId: row.key_id,
      model: row.model,
      promptTokens: row.prompt_tokens,
      completionTokens: row.completion_tokens,
      cachedTokens: row.cached_tokens,
      status: row.status,
      outcome: row.outcome as LedgerOutcome,
      finishReason: row.finish_reason,
      timeToFirstTokenMs: row.ttft_ms,
      durationMs: row.duration_ms,
      createdAt: new Date(row.created_at),
    }));
  }

  /** Idempotent. */
  async close(): Promise<void> {
    if (!this.#db.open) return;
    this.#commitQueued(); // rows appended just before closing are still written
    this.#db.close();
  }

  #statement(sql: string): Database.Statement {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }
}

/** Refuses what SQLite and PostgreSQL would read differently (SQLite takes -1 as "no limit"). */
function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError(`limit must be a non-negative integer, got ${limit}`);
  }
}

/**
 * SQLite would store NaN (an invalid Date's time, too) as NULL, silently turning a limit
 * or an expiry into "none"; PostgreSQL refuses it, and so does this store.
 */
function notNaN<T extends number | null>(value: T, field: string): T {
  if (Number.isNaN(value)) throw new RangeError(`${field} must be a number, got NaN`);
  return value;
}

function millis(date: Date): number {
  return notNaN(date.getTime(), "date");
}

function millisOrNull(date: Date | null): number | null {
  return date === null ? null : millis(date);
}

function dateOrNull(value: number | null): Date | null {
  return value === null ? null : new Date(value);
}

function keyFrom(row: KeyRow | undefined): ApiKeyRecord | undefined {
  if (row === undefined) return undefined;
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    hash: row.hash,
    models: row.models === null ? null : (JSON.parse(row.models) as string[]),
    rpm: row.rpm,
    tpm: row.tpm,
    maxConcurrent: row.max_concurrent,
    budgetTokens: row.budget_tokens,
    budgetPeriod: row.budget_period as BudgetPeriod | null,
    expiresAt: dateOrNull(row.expires_at),
    createdAt: new Date(row.created_at),
    revokedAt: dateOrNull(row.revoked_at),
  };
}

function conflictOr(error: unknown, id: string): unknown {
  if (!(error instanceof Database.SqliteError)) return error;
  if (error.code === "SQLITE_CONSTRAINT_PRIMARYKEY") {
    return new StoreConflictError(`a key with id ${id} already exists`);
  }
  if (error.code === "SQLITE_CONSTRAINT_UNIQUE") {
    return new StoreConflictError("a key with the same secret hash already exists");
  }
  return error;
}

/**
 * The access schema, as an ordered list of versioned migrations. Each store applies the
 * pending ones inside one transaction (under a lock that serialises concurrent starts)
 * and records each in `schema_migrations`. A migration, once released, never changes:
 * a change to the schema is a new migration appended to the list.
 *
 * One logical schema, two dialects:
 * - Timestamps are INTEGER milliseconds since the epoch in SQLite and `timestamptz` in
 *   PostgreSQL; both keep a JavaScript `Date` exact to the millisecond.
 * - Integers are 64-bit in both (SQLite INTEGER, PostgreSQL bigint). SQLite tables are
 *   STRICT, so a fractional or textual value is refused there as PostgreSQL refuses it.
 * - Key limits are checked by the schema (non-negative, a budget needs its period), so
 *   both stores refuse the same bad records. Ledger rows are checked only for what the
 *   aggregates depend on: a ledger must not lose a row over a cosmetic field.
 * - In PostgreSQL the model index covers the first 200 characters of the model name:
 *   the name comes from the client, and a B-tree entry over ~2.7 kB is an error there.
 */

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sqlite: string;
  readonly postgres: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "keys and usage ledger",
    sqlite: `
      CREATE TABLE keys (
        id TEXT NOT NULL PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE CHECK (length(hash) BETWEEN 1 AND 256),
        models TEXT CHECK (models IS NULL OR json_type(models) = 'array'),
        rpm INTEGER CHECK (rpm >= 0),
        tpm INTEGER CHECK (tpm >= 0),
        max_concurrent INTEGER CHECK (max_concurrent >= 0),
        budget_tokens INTEGER CHECK (budget_tokens >= 0),
        budget_period TEXT CHECK (budget_period IN ('day', 'month', 'total')),
        expires_at INTEGER,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER,
        CHECK ((budget_tokens IS NULL) = (budget_period IS NULL))
      ) STRICT;
      CREATE INDEX keys_created_at ON keys (created_at);

      CREATE TABLE ledger (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        key_id TEXT REFERENCES keys (id),
        model TEXT,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL
          CHECK (outcome IN ('completed', 'rejected', 'failed', 'abandoned', 'stopped')),
        finish_reason TEXT,
        ttft_ms REAL,
        duration_ms REAL NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX ledger_created_at ON ledger (created_at);
      CREATE INDEX ledger_key_created_at ON ledger (key_id, created_at);
      CREATE INDEX ledger_model_created_at ON ledger (model, created_at);
    `,
    postgres: `
      CREATE TABLE keys (
        id text NOT NULL CONSTRAINT keys_pkey PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
        name text NOT NULL,
        prefix text NOT NULL,
        hash text NOT NULL CONSTRAINT keys_hash_key UNIQUE CHECK (length(hash) BETWEEN 1 AND 256),
        models jsonb CHECK (models IS NULL OR jsonb_typeof(models) = 'array'),
        rpm bigint CHECK (rpm >= 0),
        tpm bigint CHECK (tpm >= 0),
        max_concurrent bigint CHECK (max_concurrent >= 0),
        budget_tokens bigint CHECK (budget_tokens >= 0),
        budget_period text CHECK (budget_period IN ('day', 'month', 'total')),
        expires_at timestamptz,
        created_at timestamptz NOT NULL,
        revoked_at timestamptz,
        CHECK ((budget_tokens IS NULL) = (budget_period IS NULL))
      );
      CREATE INDEX keys_created_at ON keys (created_at);

      CREATE TABLE ledger (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        request_id text NOT NULL,
        key_id text REFERENCES keys (id),
        model text,
        prompt_tokens bigint NOT NULL,
        completion_tokens bigint NOT NULL,
        cached_tokens bigint NOT NULL,
        status bigint NOT NULL,
        outcome text NOT NULL
          CHECK (outcome IN ('completed', 'rejected', 'failed', 'abandoned', 'stopped')),
        finish_reason text,
        ttft_ms double precision,
        duration_ms double precision NOT NULL,
        created_at timestamptz NOT NULL
      );
      CREATE INDEX ledger_created_at ON ledger (created_at);
      CREATE INDEX ledger_key_created_at ON ledger (key_id, created_at);
      CREATE INDEX ledger_model_created_at ON ledger (left(model, 200), created_at);
    `,
  },
];

/**
 * The migrations still to apply, in order, given the versions a database has recorded.
 * Throws when the database is newer than this code: running an old Parley against it
 * would misread it.
 */
export function pendingMigrations(applied: readonly number[]): Migration[] {
  const latest = MIGRATIONS.at(-1)?.version ?? 0;
  const newest = Math.max(0, ...applied);
  if (newest > latest) {
    throw new Error(
      `the access database is at schema version ${newest}, newer than this Parley knows ` +
        `(${latest}); upgrade Parley to use it`,
    );
  }
  const done = new Set(applied);
  return MIGRATIONS.filter((migration) => !done.has(migration.version));
}

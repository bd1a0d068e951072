/**
 * Where keys and the usage ledger live: a SQLite file by default, PostgreSQL when
 * `DATABASE_URL` is set. Both implement this interface with the same schema migrations
 * and the same behaviour (one test suite runs against both).
 */
import type { ApiKeyRecord, LedgerRow, UsageBucket, UsageQuery } from "./types.js";

/** The ledger's columns, in the order of {@link ledgerValues}. */
export const LEDGER_COLUMNS =
  "request_id, key_id, model, prompt_tokens, completion_tokens, cached_tokens, status, outcome, finish_reason, ttft_ms, duration_ms, created_at";

/**
 * A ledger row's values in the order of {@link LEDGER_COLUMNS}, its time as each dialect
 * stores it (`date` may throw on an invalid Date).
 */
export function ledgerValues<T>(
  row: LedgerRow,
  date: (value: Date) => T,
): [string, string | null, string | null, number, number, number, number, string, string | null, number | null, number, T] {
  return [
    row.requestId,
    row.keyId,
    row.model,
    row.promptTokens,
    row.completionTokens,
    row.cachedTokens,
    row.status,
    row.outcome,
    row.finishReason,
    row.timeToFirstTokenMs,
    row.durationMs,
    date(row.createdAt),
  ];
}

export interface AccessStore {
  /** Creates or upgrades the schema; idempotent, safe to run on every start. */
  migrate(): Promise<void>;

  /** Throws a `StoreConflictError` when the id or hash already exists. */
  createKey(record: ApiKeyRecord): Promise<void>;
  /** The key whose secret hashes to `hash`, revoked or not. */
  findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined>;
  getKey(id: string): Promise<ApiKeyRecord | undefined>;
  /** Every key, oldest first. */
  listKeys(): Promise<ApiKeyRecord[]>;
  /** Marks the key revoked (idempotent: keeps the first revocation time); undefined if unknown. */
  revokeKey(id: string, at: Date): Promise<ApiKeyRecord | undefined>;
  /** Replaces the key's secret (rotation), keeping its id, limits and usage; undefined if unknown. */
  replaceKeySecret(id: string, hash: string, prefix: string): Promise<ApiKeyRecord | undefined>;
  /** Whether any key exists (revoked ones included). */
  hasKeys(): Promise<boolean>;

  /** Appends one row; durable (committed) when the promise resolves. */
  appendLedger(row: LedgerRow): Promise<void>;
  usage(query: UsageQuery): Promise<UsageBucket[]>;
  /** Prompt plus completion tokens a key used since `since` (all time when null). */
  tokensUsed(keyId: string, since: Date | null): Promise<number>;
  /** The most recent rows, newest first. */
  recentRequests(limit: number): Promise<LedgerRow[]>;

  close(): Promise<void>;
}

/** A unique constraint was violated (duplicate key id or secret hash). */
export class StoreConflictError extends Error {
  override readonly name = "StoreConflictError";
}

/**
 * The records of multi-tenant access: API keys with their limits, and usage-ledger rows.
 * Pure types; stores and limiters implement the interfaces in `store.ts` and `limiter.ts`.
 */

export type BudgetPeriod = "day" | "month" | "total";

/** What a key may do. `null` everywhere means "no limit". */
export interface KeyLimits {
  /** Model names the key may use; null allows every served model. */
  readonly models: readonly string[] | null;
  /** Requests per minute. */
  readonly rpm: number | null;
  /** Tokens (prompt + completion) per minute. */
  readonly tpm: number | null;
  /** Requests in flight at once. */
  readonly maxConcurrent: number | null;
  /** Tokens (prompt + completion) per budget period; set together with `budgetPeriod`. */
  readonly budgetTokens: number | null;
  readonly budgetPeriod: BudgetPeriod | null;
  /** After this instant the key is refused (401). */
  readonly expiresAt: Date | null;
}

export interface ApiKeyRecord extends KeyLimits {
  /** Public identifier, `key_` + 16 hex digits; safe to log and show. */
  readonly id: string;
  readonly name: string;
  /** The first characters of the secret, for recognising a key in lists (e.g. `sk-pl-4f9A`). */
  readonly prefix: string;
  /** SHA-256 of the secret, hex. The secret itself is never stored. */
  readonly hash: string;
  readonly createdAt: Date;
  readonly revokedAt: Date | null;
}

/**
 * How a request ended, for the ledger:
 * - `completed`: a response was delivered (finish_reason stop or length);
 * - `rejected`: refused after authentication (4xx, 429, 503) before generating;
 * - `failed`: the server or engine failed (5xx, or an error event mid-stream);
 * - `abandoned`: the client went away before the response was complete;
 * - `stopped`: the server ended it (shutdown past the drain deadline).
 */
export type LedgerOutcome = "completed" | "rejected" | "failed" | "abandoned" | "stopped";

export interface LedgerRow {
  readonly requestId: string;
  /** The key's id; null when the request used a static `--api-key` or no auth. */
  readonly keyId: string | null;
  readonly model: string | null;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedTokens: number;
  /** HTTP status answered (499 when the client went away first). */
  readonly status: number;
  readonly outcome: LedgerOutcome;
  readonly finishReason: string | null;
  readonly timeToFirstTokenMs: number | null;
  readonly durationMs: number;
  /** When the request arrived. */
  readonly createdAt: Date;
}

export type UsageGrouping = "day" | "key" | "model" | "none";

export interface UsageQuery {
  readonly keyId?: string | undefined;
  readonly model?: string | undefined;
  /** Inclusive lower bound on `createdAt`. */
  readonly since?: Date | undefined;
  /** Exclusive upper bound on `createdAt`. */
  readonly until?: Date | undefined;
  readonly groupBy: UsageGrouping;
}

export interface UsageBucket {
  /** The day (`YYYY-MM-DD`, UTC), key id (or `(none)`), model, or `all`. */
  readonly group: string;
  readonly requests: number;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedTokens: number;
  readonly totalTokens: number;
}

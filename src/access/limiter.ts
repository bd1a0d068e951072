/**
 * Rate limits, concurrency and token budgets per key, enforced at admission (DESIGN §2
 * stage 5). Counters live in process memory by default and in Redis when `REDIS_URL` is
 * set, so that several Parley replicas enforce one shared limit. Both implementations
 * pass the same test suite.
 *
 * Requests and tokens per minute are token buckets (capacity = the per-minute limit,
 * refilled continuously), so 200 simultaneous requests on a 50-per-minute key admit
 * exactly 50. A request reserves its `max_tokens` from the tokens-per-minute bucket and
 * the budget when admitted, and settles to its actual prompt + completion tokens when it
 * ends (which may take the bucket below zero: later requests then wait).
 */
import type { BudgetPeriod, KeyLimits } from "./types.js";

export interface LimitRequest {
  readonly keyId: string;
  readonly limits: KeyLimits;
  /** Tokens reserved now, settled later: the request's `max_tokens`. */
  readonly reserveTokens: number;
  /** Unique per request; names its concurrency lease. */
  readonly requestId: string;
  readonly now: number;
}

/** What OpenAI's `x-ratelimit-*` headers report; a part is null when that limit is not set. */
export interface RateLimitState {
  readonly requests: { readonly limit: number; readonly remaining: number; readonly resetMs: number } | null;
  readonly tokens: { readonly limit: number; readonly remaining: number; readonly resetMs: number } | null;
}

export type LimitReason = "requests" | "tokens" | "concurrency" | "budget";

export interface LimitLease {
  /**
   * Ends the request: frees its concurrency slot and settles its reservation to the
   * tokens it actually used. Idempotent: only the first call counts.
   */
  settle(usedTokens: number): Promise<void>;
}

export type AdmitResult =
  | { readonly admitted: true; readonly lease: LimitLease; readonly state: RateLimitState }
  | {
      readonly admitted: false;
      readonly reason: LimitReason;
      /** When a retry could succeed; for an exhausted budget, when the period ends (null for `total`). */
      readonly retryAfterMs: number | null;
      readonly state: RateLimitState;
      /** For `budget`: tokens left in the period. */
      readonly budgetRemaining?: number;
    };

/** Tokens a key has used in the current budget period, read from the ledger when a counter starts. */
export type BudgetSeed = (keyId: string, periodStart: Date | null) => Promise<number>;

export interface RateLimiter {
  /**
   * Checks every limit of the key and, only if all pass, takes one request, the
   * reservation and a concurrency slot, atomically (no partial charge on refusal).
   */
  admit(request: LimitRequest): Promise<AdmitResult>;
  close(): Promise<void>;
}

/** Start of the budget period containing `now` (UTC), or null for `total`. */
export function budgetPeriodStart(period: BudgetPeriod, now: number): Date | null {
  const date = new Date(now);
  if (period === "day") return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  if (period === "month") return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1));
  return null;
}

/** End of the budget period containing `now` (UTC), or null for `total`. */
export function budgetPeriodEnd(period: BudgetPeriod, now: number): Date | null {
  const date = new Date(now);
  if (period === "day") return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate() + 1));
  if (period === "month") return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1));
  return null;
}

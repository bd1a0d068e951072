/**
 * Rate limits kept in this process's memory: the default for one Parley process, and the
 * reference for the semantics that `redis-scripts.ts` repeats in Lua (same formulas, same
 * order of checks, so that one behaviour suite passes against both).
 *
 * - Requests and tokens per minute are token buckets: capacity = the limit, refilled
 *   continuously at limit per 60 s. A request needs 1 request and its reservation; a
 *   reservation larger than the whole tokens bucket needs a full bucket instead (it then
 *   takes the bucket below zero) so that it waits at most one window, never forever.
 * - Concurrency counts unsettled leases; a lease not settled within `leaseTtlMs` is
 *   presumed lost and frees its slot.
 * - A budget counts the period's tokens, seeded once from the ledger, plus reservations
 *   of requests still in flight; a request is admitted only if its reservation fits.
 * - When several checks fail the reason is the first of budget, concurrency, requests,
 *   tokens; `retryAfterMs` is the budget period's end, or else the longest wait among the
 *   failing checks. A limit of 0 refuses every request, with `retryAfterMs` null.
 */
import { budgetPeriodEnd, budgetPeriodStart } from "./limiter.js";
import type {
  AdmitResult,
  BudgetSeed,
  LimitLease,
  LimitReason,
  LimitRequest,
  RateLimiter,
  RateLimitState,
} from "./limiter.js";
import type { BudgetPeriod, KeyLimits } from "./types.js";

const WINDOW_MS = 60_000;
/** Defaults to 10 minutes: longer than any generation should take. */
export const DEFAULT_LEASE_TTL_MS = 10 * 60_000;
/** Nobody can know when an in-flight request will end; this is the hint a refusal for concurrency gives. */
export const CONCURRENCY_RETRY_MS = 1_000;

export interface LimiterOptions {
  /** Tokens already used in a budget period, from the ledger; called once per key and period. */
  readonly budgetSeed: BudgetSeed;
  /** How long an unsettled lease holds its concurrency slot. Defaults to 10 minutes. */
  readonly leaseTtlMs?: number;
  /**
   * The time at settlement, ms since the epoch (admission uses `request.now`). Defaults to
   * the admission's `request.now` plus the time elapsed since, so that settlement follows
   * whatever clock the caller admits with.
   */
  readonly clock?: () => number;
}

/** The limits that admission enforces; null when the key has none. */
export interface EnforcedLimits {
  readonly rpm: number | null;
  readonly tpm: number | null;
  readonly maxConcurrent: number | null;
  readonly budget: { readonly tokens: number; readonly period: BudgetPeriod } | null;
}

/** Validates a request and picks its enforced limits. A budget without a period is a `total` budget. */
export function enforcedLimits(request: LimitRequest): EnforcedLimits | null {
  const { limits } = request;
  checkCount("reserveTokens", request.reserveTokens);
  if (!Number.isFinite(request.now)) throw new RangeError("now must be a finite number of ms");
  for (const field of ["rpm", "tpm", "maxConcurrent", "budgetTokens"] as const) {
    const value = limits[field];
    if (value !== null) checkCount(field, value);
  }
  if (limits.rpm === null && limits.tpm === null && limits.maxConcurrent === null && limits.budgetTokens === null) {
    return null;
  }
  const budget = limits.budgetTokens === null ? null : { tokens: limits.budgetTokens, period: limits.budgetPeriod ?? "total" };
  return { rpm: limits.rpm, tpm: limits.tpm, maxConcurrent: limits.maxConcurrent, budget };
}

export function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
}

export const UNLIMITED: AdmitResult = {
  admitted: true,
  lease: { settle: async () => {} },
  state: { requests: null, tokens: null },
};

/** A lease whose settlement runs once; later calls resolve without effect. */
export function settleOnce(settle: (usedTokens: number) => Promise<void>): LimitLease {
  let settled = false;
  return {
    async settle(usedTokens: number) {
      checkCount("usedTokens", usedTokens);
      if (settled) return;
      settled = true;
      await settle(usedTokens);
    },
  };
}

/** When a lease settles: the injected clock, or the admission's time plus the time elapsed since. */
export function settlementClock(clock: (() => number) | undefined, admittedAt: number): () => number {
  if (clock !== undefined) return clock;
  const started = performance.now();
  return () => admittedAt + (performance.now() - started);
}

/** The lease's name: the request id plus a nonce, since clients choose request ids (`x-request-id`). */
export function leaseName(requestId: string): string {
  return `${requestId}#${Math.random().toString(36).slice(2, 10)}`;
}

/** Budget period start as a stable key part: ms since the epoch, or `total`. */
export function periodKey(period: BudgetPeriod, now: number): { key: string; start: Date | null; retryAfterMs: number | null } {
  const start = budgetPeriodStart(period, now);
  const end = budgetPeriodEnd(period, now);
  return { key: start === null ? "total" : String(start.getTime()), start, retryAfterMs: end === null ? null : end.getTime() - now };
}

function bucketState(limit: number, level: number): { limit: number; remaining: number; resetMs: number } {
  const remaining = Math.max(0, Math.floor(level));
  const resetMs = limit <= 0 || level >= limit ? 0 : Math.ceil(((limit - level) * WINDOW_MS) / limit);
  return { limit, remaining, resetMs };
}

interface Bucket {
  level: number;
  at: number;
}

interface KeyCounters {
  requests?: Bucket;
  tokens?: Bucket;
  /** Lease name → expiry. */
  readonly leases: Map<string, number>;
  /** Period key → tokens used and reserved. */
  readonly budgets: Map<string, { used: number }>;
}

function refill(bucket: Bucket | undefined, capacity: number, now: number): Bucket {
  if (bucket === undefined) return { level: capacity, at: now };
  const elapsed = Math.max(0, now - bucket.at);
  return { level: Math.min(capacity, bucket.level + (elapsed * capacity) / WINDOW_MS), at: Math.max(now, bucket.at) };
}

/** Ms until the bucket holds `need`; null when it never will (a zero limit). */
function waitFor(need: number, level: number, capacity: number): number | null {
  return capacity <= 0 ? null : Math.ceil(((need - level) * WINDOW_MS) / capacity);
}

export class MemoryLimiter implements RateLimiter {
  readonly #keys = new Map<string, KeyCounters>();
  readonly #seeding = new Map<string, Promise<{ used: number }>>();
  readonly #budgetSeed: BudgetSeed;
  readonly #leaseTtlMs: number;
  readonly #clock: (() => number) | undefined;

  constructor(options: LimiterOptions) {
    this.#budgetSeed = options.budgetSeed;
    this.#leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.#clock = options.clock;
  }

  async admit(request: LimitRequest): Promise<AdmitResult> {
    const limits = enforcedLimits(request);
    if (limits === null) return UNLIMITED;
    const { keyId, now, reserveTokens: reserve } = request;
    const counters = this.#counters(keyId);
    const period = limits.budget === null ? null : periodKey(limits.budget.period, now);
    const budgetCounter = period === null ? null : await this.#seed(keyId, counters, period.key, period.start);
    // From here on nothing awaits: the checks and the charges are one atomic step.
    for (const [name, expiry] of counters.leases) if (expiry <= now) counters.leases.delete(name);
    const requests = limits.rpm === null ? null : refill(counters.requests, limits.rpm, now);
    const tokens = limits.tpm === null ? null : refill(counters.tokens, limits.tpm, now);

    const refusal = new Refusal();
    if (limits.maxConcurrent !== null && counters.leases.size >= limits.maxConcurrent) {
      refusal.add("concurrency", limits.maxConcurrent > 0 ? CONCURRENCY_RETRY_MS : null);
    }
    if (limits.rpm !== null && requests !== null && requests.level < 1) {
      refusal.add("requests", waitFor(1, requests.level, limits.rpm));
    }
    const tokensNeeded = limits.tpm === null ? 0 : Math.min(reserve, limits.tpm);
    if (limits.tpm !== null && tokens !== null && (limits.tpm <= 0 || tokens.level < tokensNeeded)) {
      refusal.add("tokens", waitFor(tokensNeeded, tokens.level, limits.tpm));
    }
    let budgetRemaining: number | undefined;
    if (limits.budget !== null && period !== null && budgetCounter !== null) {
      if (budgetCounter.used + reserve > limits.budget.tokens) {
        refusal.overrule("budget", period.retryAfterMs);
        budgetRemaining = Math.max(0, limits.budget.tokens - budgetCounter.used);
      }
    }
    const { reason, retryAfterMs } = refusal;
    if (reason !== null) {
      const state = stateOf(limits, requests, tokens);
      return budgetRemaining === undefined
        ? { admitted: false, reason, retryAfterMs, state }
        : { admitted: false, reason, retryAfterMs, state, budgetRemaining };
    }

    if (requests !== null) counters.requests = { level: requests.level - 1, at: requests.at };
    if (tokens !== null) counters.tokens = { level: tokens.level - reserve, at: tokens.at };
    const lease = leaseName(request.requestId);
    if (limits.maxConcurrent !== null) counters.leases.set(lease, now + this.#leaseTtlMs);
    if (budgetCounter !== null) budgetCounter.used += reserve;
    const state = stateOf(limits, counters.requests ?? null, counters.tokens ?? null);
    const tpm = limits.tpm;
    const clock = settlementClock(this.#clock, now);
    return {
      admitted: true,
      state,
      lease: settleOnce(async (used) => {
        const refund = reserve - used;
        if (tpm !== null && refund !== 0) {
          const bucket = refill(counters.tokens, tpm, clock());
          counters.tokens = { level: Math.min(tpm, bucket.level + refund), at: bucket.at };
        }
        counters.leases.delete(lease);
        // A counter dropped since (the period rolled over) is re-seeded from the ledger.
        if (period !== null) {
          const counter = counters.budgets.get(period.key);
          if (counter !== undefined) counter.used -= refund;
        }
      }),
    };
  }

  async close(): Promise<void> {
    this.#keys.clear();
  }

  #counters(keyId: string): KeyCounters {
    let counters = this.#keys.get(keyId);
    if (counters === undefined) {
      counters = { leases: new Map(), budgets: new Map() };
      this.#keys.set(keyId, counters);
    }
    return counters;
  }

  /** The period's counter, seeded from the ledger once; concurrent admissions share one fetch. */
  async #seed(keyId: string, counters: KeyCounters, key: string, start: Date | null): Promise<{ used: number }> {
    const existing = counters.budgets.get(key);
    if (existing !== undefined) return existing;
    const pendingKey = `${keyId}\n${key}`;
    let pending = this.#seeding.get(pendingKey);
    if (pending === undefined) {
      pending = this.#budgetSeed(keyId, start)
        .then((used) => {
          checkCount("budget seed", used);
          const counter = counters.budgets.get(key) ?? { used };
          counters.budgets.set(key, counter);
          // Counters of earlier periods are done with once a later one starts.
          for (const other of counters.budgets.keys()) if (Number(other) < Number(key)) counters.budgets.delete(other);
          return counter;
        })
        .finally(() => this.#seeding.delete(pendingKey));
      this.#seeding.set(pendingKey, pending);
    }
    return pending;
  }
}

/** The first failing check names the reason; the wait is the longest (null: never). */
class Refusal {
  reason: LimitReason | null = null;
  retryAfterMs: number | null = 0;

  add(reason: LimitReason, waitMs: number | null): void {
    this.reason ??= reason;
    this.retryAfterMs = this.retryAfterMs === null || waitMs === null ? null : Math.max(this.retryAfterMs, waitMs);
  }

  /** A spent budget outranks every other reason: retrying before the period ends is pointless. */
  overrule(reason: LimitReason, waitMs: number | null): void {
    this.reason = reason;
    this.retryAfterMs = waitMs;
  }
}

function stateOf(limits: EnforcedLimits, requests: Bucket | null, tokens: Bucket | null): RateLimitState {
  return {
    requests: limits.rpm === null || requests === null ? null : bucketState(limits.rpm, requests.level),
    tokens: limits.tpm === null || tokens === null ? null : bucketState(limits.tpm, tokens.level),
  };
}

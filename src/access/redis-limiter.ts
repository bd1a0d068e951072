/**
 * Rate limits kept in Redis, so that several Parley replicas enforce one shared limit.
 * Same semantics as `MemoryLimiter` (see its header); each admission is one Lua script
 * (`redis-scripts.ts`), so concurrent admissions from any number of replicas are exact.
 *
 * Keys are `<prefix>rl:{<key id>}:<counter>`: one hash tag per API key, so a key's
 * counters stay in one slot of a Redis Cluster.
 */
import type { Redis } from "ioredis";
import type { AdmitResult, BudgetSeed, LimitReason, LimitRequest, RateLimiter, RateLimitState } from "./limiter.js";
import {
  CONCURRENCY_RETRY_MS,
  DEFAULT_LEASE_TTL_MS,
  UNLIMITED,
  checkCount,
  enforcedLimits,
  leaseName,
  periodKey,
  settleOnce,
  settlementClock,
  type LimiterOptions,
} from "./memory-limiter.js";
import { ADMIT_SCRIPT, BUDGET_IDLE_TTL_MS, SETTLE_SCRIPT } from "./redis-scripts.js";

export interface RedisLimiterOptions extends LimiterOptions {
  /** Prefix of every key this limiter writes. Defaults to `parley:`. */
  readonly keyPrefix?: string;
}

type Arg = string | number;

/** The client with the two scripts defined (EVALSHA, falling back to EVAL once per connection). */
interface ScriptedRedis extends Redis {
  parleyAdmit(...keysAndArgs: Arg[]): Promise<number[]>;
  parleySettle(...keysAndArgs: Arg[]): Promise<number>;
}

const REASONS: Record<number, LimitReason> = { 1: "budget", 2: "concurrency", 3: "requests", 4: "tokens" };
/** Seeding is retried this often when the counter disappears in between (a real race needs an expiry). */
const SEED_ATTEMPTS = 3;

export class RedisLimiter implements RateLimiter {
  readonly #redis: ScriptedRedis;
  readonly #prefix: string;
  readonly #budgetSeed: BudgetSeed;
  readonly #leaseTtlMs: number;
  readonly #clock: (() => number) | undefined;
  readonly #seeding = new Map<string, Promise<void>>();

  /** Takes ownership of `redis`: `close()` quits it. */
  constructor(redis: Redis, options: RedisLimiterOptions) {
    redis.defineCommand("parleyAdmit", { numberOfKeys: 4, lua: ADMIT_SCRIPT });
    redis.defineCommand("parleySettle", { numberOfKeys: 3, lua: SETTLE_SCRIPT });
    this.#redis = redis as ScriptedRedis;
    this.#prefix = options.keyPrefix ?? "parley:";
    this.#budgetSeed = options.budgetSeed;
    this.#leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.#clock = options.clock;
  }

  async admit(request: LimitRequest): Promise<AdmitResult> {
    const limits = enforcedLimits(request);
    if (limits === null) return UNLIMITED;
    const { keyId, now, reserveTokens: reserve } = request;
    const base = `${this.#prefix}rl:{${keyId}}:`;
    const period = limits.budget === null ? null : periodKey(limits.budget.period, now);
    const keys = [`${base}requests`, `${base}tokens`, `${base}leases`, `${base}budget:${period?.key ?? "none"}`] as const;
    const lease = leaseName(request.requestId);
    const args: Arg[] = [
      now,
      limits.rpm ?? -1,
      limits.tpm ?? -1,
      limits.maxConcurrent ?? -1,
      limits.budget?.tokens ?? -1,
      reserve,
      lease,
      this.#leaseTtlMs,
      period?.retryAfterMs ?? -1,
      CONCURRENCY_RETRY_MS,
    ];

    for (let attempt = 1; ; attempt++) {
      const reply = await this.#redis.parleyAdmit(...keys, ...args);
      const [status = 0, reasonCode = 0, retry = -1, rRemaining = -1, rReset = -1, tRemaining = -1, tReset = -1, budgetLeft = -1] = reply;
      const state: RateLimitState = {
        requests: limits.rpm === null ? null : { limit: limits.rpm, remaining: rRemaining, resetMs: rReset },
        tokens: limits.tpm === null ? null : { limit: limits.tpm, remaining: tRemaining, resetMs: tReset },
      };
      if (status === 1) {
        const clock = settlementClock(this.#clock, now);
        const settleKeys = [keys[1], keys[2], keys[3]] as const;
        const leaseArg = limits.maxConcurrent === null ? "" : lease;
        const budgetArg = period === null ? "0" : "1";
        const tpmArg = limits.tpm ?? -1;
        const settle = settleOnce(async (used) => {
          await this.#redis.parleySettle(...settleKeys, clock(), tpmArg, reserve - used, leaseArg, budgetArg);
        });
        return { admitted: true, state, lease: settle };
      }
      if (status === 0) {
        const reason = REASONS[reasonCode];
        if (reason === undefined) throw new Error(`rate limiter script answered an unknown reason ${reasonCode}`);
        const retryAfterMs = retry < 0 ? null : retry;
        return reason === "budget"
          ? { admitted: false, reason, retryAfterMs, state, budgetRemaining: budgetLeft }
          : { admitted: false, reason, retryAfterMs, state };
      }
      if (period === null || attempt >= SEED_ATTEMPTS) throw new Error(`budget counter ${keys[3]} could not be seeded`);
      await this.#seed(keyId, period.start, keys[3]);
    }
  }

  async close(): Promise<void> {
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }

  /** Sets the counter from the ledger unless it exists (SET NX): a lost race discards the fetch, so nothing counts twice. */
  async #seed(keyId: string, start: Date | null, key: string): Promise<void> {
    let pending = this.#seeding.get(key);
    if (pending === undefined) {
      pending = this.#budgetSeed(keyId, start)
        .then(async (used) => {
          checkCount("budget seed", used);
          await this.#redis.set(key, used, "PX", BUDGET_IDLE_TTL_MS, "NX");
        })
        .finally(() => this.#seeding.delete(key));
      this.#seeding.set(key, pending);
    }
    await pending;
  }
}

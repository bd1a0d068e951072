/**
 * One behaviour suite for every RateLimiter: process memory, and a real Redis when
 * TEST_REDIS_URL is set (scripts/with-services.sh starts one). Time is injected: admissions
 * carry `now`, settlements read the test's clock.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test, type TestContext } from "node:test";
import { Redis } from "ioredis";
import type { AdmitResult, BudgetSeed, LimitLease, RateLimiter } from "../../src/access/limiter.js";
import { DEFAULT_LEASE_TTL_MS, MemoryLimiter } from "../../src/access/memory-limiter.js";
import { openLimiter } from "../../src/access/open-limiter.js";
import { rateLimitHeaders } from "../../src/access/rate-limit-headers.js";
import { RedisLimiter } from "../../src/access/redis-limiter.js";
import type { KeyLimits } from "../../src/access/types.js";

interface Target {
  /** Whether two instances share counters, as replicas on one Redis do. */
  readonly shared: boolean;
  open(options: { budgetSeed: BudgetSeed; clock: () => number }): Promise<RateLimiter>;
}

const T0 = Date.UTC(2025, 2, 14, 12, 0, 0); // a Friday noon, UTC
const NO_LIMITS: KeyLimits = { models: null, rpm: null, tpm: null, maxConcurrent: null, budgetTokens: null, budgetPeriod: null, expiresAt: null };

/** A fresh key, limiter(s), a ledger seed that records its calls, and a settable clock. */
async function setup(t: TestContext, target: Target, partial: Partial<KeyLimits>, seed: (start: Date | null) => number = () => 0) {
  const clock = { now: T0 };
  const seedCalls: (number | null)[] = [];
  const budgetSeed: BudgetSeed = async (_keyId, start) => {
    seedCalls.push(start === null ? null : start.getTime());
    await new Promise((resolve) => setImmediate(resolve)); // a real ledger answers later
    return seed(start);
  };
  const open = async () => {
    const limiter = await target.open({ budgetSeed, clock: () => clock.now });
    t.after(() => limiter.close());
    return limiter;
  };
  const limiter = await open();
  const keyId = `key_${randomBytes(8).toString("hex")}`;
  const limits: KeyLimits = { ...NO_LIMITS, ...partial };
  let sequence = 0;
  const admit = (reserveTokens = 0, now = clock.now, by: RateLimiter = limiter) =>
    by.admit({ keyId, limits, reserveTokens, requestId: `req-${sequence++}`, now });
  return { limiter, open, clock, seedCalls, admit, keyId, limits };
}

function leaseOf(result: AdmitResult): LimitLease {
  assert.equal(result.admitted, true, `expected admission, got ${JSON.stringify(result)}`);
  return (result as Extract<AdmitResult, { admitted: true }>).lease;
}

function refusal(result: AdmitResult) {
  assert.equal(result.admitted, false, "expected a refusal");
  return result as Extract<AdmitResult, { admitted: false }>;
}

function behaviour(target: Target): void {
  test("200 simultaneous requests on a 50-per-minute key admit exactly 50", async (t) => {
    const { admit } = await setup(t, target, { rpm: 50 });
    const results = await Promise.all(Array.from({ length: 200 }, () => admit()));
    assert.equal(results.filter((result) => result.admitted).length, 50);
    for (const result of results.filter((result) => !result.admitted)) {
      assert.deepEqual({ ...refusal(result) }, { admitted: false, reason: "requests", retryAfterMs: 1200, state: { requests: { limit: 50, remaining: 0, resetMs: 60_000 }, tokens: null } });
    }
  });

  test("two instances sharing counters admit exactly 50 of 200 between them", { skip: !target.shared && "counters in memory belong to one process" }, async (t) => {
    const { admit, open } = await setup(t, target, { rpm: 50 });
    const replica = await open();
    const results = await Promise.all(Array.from({ length: 200 }, (_, n) => (n % 2 === 0 ? admit() : admit(0, T0, replica))));
    assert.equal(results.filter((result) => result.admitted).length, 50);
  });

  test("requests refill continuously, and time running backwards adds nothing", async (t) => {
    const { admit } = await setup(t, target, { rpm: 60 });
    assert.deepEqual((await admit()).state.requests, { limit: 60, remaining: 59, resetMs: 1000 });
    for (let n = 1; n < 60; n++) await admit();
    assert.equal(refusal(await admit()).retryAfterMs, 1000);
    const half = refusal(await admit(0, T0 + 500));
    assert.deepEqual([half.retryAfterMs, half.state.requests], [500, { limit: 60, remaining: 0, resetMs: 59_500 }]);
    assert.deepEqual((await admit(0, T0 + 1000)).state.requests, { limit: 60, remaining: 0, resetMs: 60_000 });
    assert.equal(refusal(await admit(0, T0)).reason, "requests"); // an earlier clock refills nothing
    assert.deepEqual((await admit(0, T0 + 61_000)).state.requests, { limit: 60, remaining: 59, resetMs: 1000 });
  });

  test("tokens are reserved at admission and settled to what was used", async (t) => {
    const { admit } = await setup(t, target, { tpm: 1000 });
    const first = await admit(400);
    assert.deepEqual(first.state, { requests: null, tokens: { limit: 1000, remaining: 600, resetMs: 24_000 } });
    const second = leaseOf(await admit(400));
    const third = refusal(await admit(400));
    assert.deepEqual([third.reason, third.retryAfterMs, third.state.tokens?.remaining], ["tokens", 12_000, 200]);
    await leaseOf(first).settle(100); // used less: 300 come back
    await leaseOf(first).settle(0); // only the first settlement counts
    assert.equal((await admit(0)).state.tokens?.remaining, 500);
    await second.settle(1400); // used more: the bucket goes below zero and blocks
    const blocked = refusal(await admit(1));
    assert.deepEqual([blocked.retryAfterMs, blocked.state.tokens], [30_060, { limit: 1000, remaining: 0, resetMs: 90_000 }]);
  });

  test("a reservation above the whole tokens limit waits for a full bucket, not forever", async (t) => {
    const { admit } = await setup(t, target, { tpm: 100 });
    assert.equal((await admit(250)).state.tokens?.remaining, 0);
    assert.equal(refusal(await admit(250)).retryAfterMs, 150_000);
    assert.equal((await admit(250, T0 + 149_999)).admitted, false);
    assert.equal((await admit(250, T0 + 150_000)).admitted, true);
  });

  test("concurrency slots are taken at admission and freed once by settlement", async (t) => {
    const { admit } = await setup(t, target, { maxConcurrent: 2 });
    const first = leaseOf(await admit());
    leaseOf(await admit());
    const full = refusal(await admit());
    assert.deepEqual([full.reason, full.retryAfterMs, full.state], ["concurrency", 1000, { requests: null, tokens: null }]);
    await first.settle(0);
    await first.settle(0);
    leaseOf(await admit());
    assert.equal(refusal(await admit()).reason, "concurrency");
  });

  test("a lease never settled frees its slot when it expires", async (t) => {
    const { limiter, keyId, limits, admit } = await setup(t, target, { maxConcurrent: 2 });
    // Clients choose request ids: a reused one still names a lease of its own.
    const same = () => limiter.admit({ keyId, limits, reserveTokens: 0, requestId: "same", now: T0 });
    assert.deepEqual([(await same()).admitted, (await same()).admitted, (await same()).admitted], [true, true, false]);
    assert.equal((await admit(0, T0 + DEFAULT_LEASE_TTL_MS - 1)).admitted, false);
    leaseOf(await admit(0, T0 + DEFAULT_LEASE_TTL_MS));
  });

  test("a daily budget starts from the ledger, settles to use and renews at midnight UTC", async (t) => {
    const { admit, seedCalls } = await setup(t, target, { budgetTokens: 1000, budgetPeriod: "day" }, (start) => (start?.getTime() === Date.UTC(2025, 2, 14) ? 900 : 0));
    const first = leaseOf(await admit(100));
    const spent = refusal(await admit(1));
    assert.deepEqual([spent.reason, spent.retryAfterMs, spent.budgetRemaining], ["budget", 12 * 3_600_000, 0]);
    await first.settle(50);
    const last = leaseOf(await admit(50));
    assert.equal(refusal(await admit(1)).budgetRemaining, 0);
    const tomorrow = Date.UTC(2025, 2, 15);
    leaseOf(await admit(1000, tomorrow));
    await last.settle(0); // settles yesterday's counter, not today's
    assert.equal(refusal(await admit(1, tomorrow + 1)).budgetRemaining, 0);
    assert.deepEqual(seedCalls, [Date.UTC(2025, 2, 14), tomorrow]);
  });

  test("a monthly budget renews on the first of the month", async (t) => {
    const { admit, seedCalls } = await setup(t, target, { budgetTokens: 500, budgetPeriod: "month" }, () => 100);
    leaseOf(await admit(400));
    const spent = refusal(await admit(1));
    assert.deepEqual([spent.retryAfterMs, spent.budgetRemaining], [Date.UTC(2025, 3, 1) - T0, 0]);
    leaseOf(await admit(400, Date.UTC(2025, 3, 1)));
    assert.deepEqual(seedCalls, [Date.UTC(2025, 2, 1), Date.UTC(2025, 3, 1)]);
  });

  test("a total budget never renews", async (t) => {
    const { admit, seedCalls } = await setup(t, target, { budgetTokens: 500, budgetPeriod: "total" }, () => 200);
    const spent = refusal(await admit(301));
    assert.deepEqual([spent.reason, spent.retryAfterMs, spent.budgetRemaining], ["budget", null, 300]);
    leaseOf(await admit(300));
    assert.equal(refusal(await admit(1, T0 + 400 * 86_400_000)).retryAfterMs, null);
    assert.deepEqual(seedCalls, [null]);
  });

  test("the ledger seed counts once under concurrency, across instances too", async (t) => {
    const { admit, open, seedCalls } = await setup(t, target, { budgetTokens: 1000, budgetPeriod: "day" }, () => 900);
    const replica = target.shared ? await open() : undefined;
    const results = await Promise.all(Array.from({ length: 40 }, (_, n) => admit(10, T0, n % 2 === 1 && replica ? replica : undefined)));
    assert.equal(results.filter((result) => result.admitted).length, 10);
    // At most one fetch per process and period (each replica may fetch; SET NX keeps one).
    assert.ok(seedCalls.length >= 1 && seedCalls.length <= (replica ? 2 : 1), `${seedCalls.length} fetches`);
  });

  test("a refusal charges nothing", async (t) => {
    const { admit } = await setup(t, target, { rpm: 10, tpm: 1000, maxConcurrent: 3, budgetTokens: 5000, budgetPeriod: "total" });
    const first = leaseOf(await admit(600));
    assert.equal(refusal(await admit(600)).reason, "tokens");
    const budget = refusal(await admit(4500));
    assert.deepEqual([budget.reason, budget.budgetRemaining], ["budget", 4400]);
    assert.deepEqual((await admit(400)).state, { requests: { limit: 10, remaining: 8, resetMs: 12_000 }, tokens: { limit: 1000, remaining: 0, resetMs: 60_000 } });
    leaseOf(await admit(0));
    const both = refusal(await admit(1)); // three in flight, and no token left
    assert.deepEqual([both.reason, both.retryAfterMs], ["concurrency", 1000]); // the longest of 1000 and 60 ms
    assert.equal(refusal(await admit(4001)).budgetRemaining, 4000);
    await first.settle(600);
    assert.deepEqual((await admit(0)).state.requests?.remaining, 6);
  });

  test("a key without limits is always admitted and reports no state", async (t) => {
    const { admit } = await setup(t, target, {});
    const results = await Promise.all(Array.from({ length: 300 }, () => admit(10_000)));
    for (const result of results) {
      assert.deepEqual(result.state, { requests: null, tokens: null });
      await leaseOf(result).settle(5);
    }
  });

  test("a limit of zero refuses everything, for good", async (t) => {
    const { admit } = await setup(t, target, { rpm: 0 });
    assert.deepEqual({ ...refusal(await admit()) }, { admitted: false, reason: "requests", retryAfterMs: null, state: { requests: { limit: 0, remaining: 0, resetMs: 0 }, tokens: null } });
  });

  test("the state feeds OpenAI's x-ratelimit headers", async (t) => {
    const { admit } = await setup(t, target, { rpm: 60, tpm: 1000 });
    assert.deepEqual(rateLimitHeaders((await admit(100)).state), {
      "x-ratelimit-limit-requests": "60",
      "x-ratelimit-remaining-requests": "59",
      "x-ratelimit-reset-requests": "1s",
      "x-ratelimit-limit-tokens": "1000",
      "x-ratelimit-remaining-tokens": "900",
      "x-ratelimit-reset-tokens": "6s",
    });
  });
}

describe("MemoryLimiter", () => behaviour({ shared: false, open: async (options) => new MemoryLimiter(options) }));

const redisUrl = process.env.TEST_REDIS_URL;
const HOW_TO_RUN = "TEST_REDIS_URL is not set; run scripts/with-services.sh node --import tsx --test test/integration/rate-limiter.test.ts";
const prefix = `parley-test-${randomBytes(6).toString("hex")}:`;

describe("RedisLimiter", { skip: redisUrl === undefined && HOW_TO_RUN }, () => {
  const url = redisUrl ?? "";
  const target: Target = { shared: true, open: async (options) => new RedisLimiter(new Redis(url), { ...options, keyPrefix: prefix }) };
  behaviour(target);

  test("every key it writes expires, under its prefix", async (t) => {
    const { admit } = await setup(t, target, { rpm: 5, tpm: 50, maxConcurrent: 5, budgetTokens: 50, budgetPeriod: "day" });
    leaseOf(await admit(10));
    const keys = await scanPrefix(url);
    assert.ok(keys.length >= 4);
    const redis = new Redis(url);
    t.after(() => redis.quit());
    for (const key of keys) assert.ok((await redis.pttl(key)) > 0, `${key} has no TTL`);
  });

  test("openLimiter opens Redis after a PING", async () => {
    const limiter = await openLimiter({ redisUrl: url, budgetSeed: async () => 0, keyPrefix: prefix });
    assert.ok(limiter instanceof RedisLimiter);
    await limiter.close();
  });

  after(async () => {
    const redis = new Redis(url);
    const keys = await scanPrefix(url);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });
});

async function scanPrefix(url: string): Promise<string[]> {
  const redis = new Redis(url);
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== "0");
  await redis.quit();
  return keys;
}

describe("openLimiter", () => {
  test("keeps counters in memory without a Redis URL", async () => {
    const limiter = await openLimiter({ budgetSeed: async () => 0 });
    assert.ok(limiter instanceof MemoryLimiter);
    await limiter.close();
  });

  test("an unreachable Redis is a clear error that never shows the password", async () => {
    const error = await openLimiter({ redisUrl: "redis://parley:s3cret-pw@127.0.0.1:1/0", budgetSeed: async () => 0, connectTimeoutMs: 2000 }).catch((caught: unknown) => caught);
    assert.ok(error instanceof Error);
    assert.match(error.message, /^cannot reach Redis at redis:\/\/parley:\*\*\*@127\.0\.0\.1:1\/0: /);
    assert.doesNotMatch(error.message, /s3cret/);
  });
});

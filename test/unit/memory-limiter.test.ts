/** The limiter's pure parts and MemoryLimiter's own contracts; the shared behaviour suite is in test/integration/rate-limiter.test.ts. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { AdmitResult } from "../../src/access/limiter.js";
import { MemoryLimiter } from "../../src/access/memory-limiter.js";
import { redactUrl } from "../../src/access/open-limiter.js";
import { formatResetDuration, rateLimitHeaders } from "../../src/access/rate-limit-headers.js";
import type { KeyLimits } from "../../src/access/types.js";

const NO_LIMITS: KeyLimits = { models: null, rpm: null, tpm: null, maxConcurrent: null, budgetTokens: null, budgetPeriod: null, expiresAt: null };
const T0 = Date.UTC(2024, 0, 1); // deliberately far from the real clock

test("reset durations are written as OpenAI writes them", () => {
  const cases: [number, string][] = [
    [0, "0s"],
    [-5, "0s"],
    [0.2, "1ms"],
    [120, "120ms"],
    [999, "999ms"],
    [999.4, "1s"],
    [1000, "1s"],
    [1500, "1.5s"],
    [1234, "1.234s"],
    [1050, "1.05s"],
    [59_999, "59.999s"],
    [60_000, "1m0s"],
    [360_000, "6m0s"],
    [3_600_000, "1h0m0s"],
    [3_723_000, "1h2m3s"],
    [90_061_500, "25h1m1.5s"],
  ];
  for (const [ms, text] of cases) assert.equal(formatResetDuration(ms), text, `${ms} ms`);
});

test("headers appear only for the limits that are set", () => {
  assert.deepEqual(rateLimitHeaders({ requests: null, tokens: null }), {});
  assert.deepEqual(rateLimitHeaders({ requests: null, tokens: { limit: 40_000, remaining: 39_000, resetMs: 1500 } }), {
    "x-ratelimit-limit-tokens": "40000",
    "x-ratelimit-remaining-tokens": "39000",
    "x-ratelimit-reset-tokens": "1.5s",
  });
  assert.deepEqual(rateLimitHeaders({ requests: { limit: 3, remaining: 0, resetMs: 20_000 }, tokens: null }), {
    "x-ratelimit-limit-requests": "3",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "20s",
  });
});

test("without an injected clock, settlement follows the admission's clock", async () => {
  const limiter = new MemoryLimiter({ budgetSeed: async () => 0 });
  const limits = { ...NO_LIMITS, tpm: 600 };
  const admit = (reserveTokens: number, now: number) => limiter.admit({ keyId: "key_a", limits, reserveTokens, requestId: "r", now });
  const first = await admit(600, T0);
  assert.equal(first.admitted, true);
  await (first as Extract<AdmitResult, { admitted: true }>).lease.settle(0);
  // Settling at the real clock, years after T0, would have dated the bucket past every later admission.
  assert.deepEqual((await admit(600, T0 + 1000)).state.tokens, { limit: 600, remaining: 0, resetMs: 60_000 });
  assert.deepEqual((await admit(0, T0 + 31_000)).state.tokens, { limit: 600, remaining: 300, resetMs: 30_000 });
});

test("bad numbers are refused before anything is charged", async () => {
  const limiter = new MemoryLimiter({ budgetSeed: async () => 0 });
  const request = { keyId: "key_b", limits: { ...NO_LIMITS, rpm: 1 }, reserveTokens: 0, requestId: "r", now: T0 };
  await assert.rejects(limiter.admit({ ...request, reserveTokens: -1 }), RangeError);
  await assert.rejects(limiter.admit({ ...request, reserveTokens: 1.5 }), RangeError);
  await assert.rejects(limiter.admit({ ...request, limits: { ...NO_LIMITS, tpm: -10 } }), RangeError);
  await assert.rejects(limiter.admit({ ...request, now: Number.NaN }), RangeError);
  const admitted = await limiter.admit(request);
  assert.equal(admitted.admitted, true);
  await assert.rejects((admitted as Extract<AdmitResult, { admitted: true }>).lease.settle(-3), RangeError);
});

test("a failed ledger seed fails the admission and is fetched again next time", async () => {
  let calls = 0;
  const limiter = new MemoryLimiter({
    budgetSeed: async () => {
      calls += 1;
      if (calls === 1) throw new Error("ledger unavailable");
      return 10;
    },
  });
  const request = { keyId: "key_c", limits: { ...NO_LIMITS, budgetTokens: 20, budgetPeriod: "day" as const }, reserveTokens: 10, requestId: "r", now: T0 };
  await assert.rejects(limiter.admit(request), /ledger unavailable/);
  assert.equal((await limiter.admit(request)).admitted, true);
  assert.equal((await limiter.admit(request)).admitted, false);
  assert.equal(calls, 2);
});

test("a budget without a period is a total budget", async () => {
  const starts: (Date | null)[] = [];
  const limiter = new MemoryLimiter({ budgetSeed: async (_key, start) => (starts.push(start), 0) });
  const result = await limiter.admit({ keyId: "key_d", limits: { ...NO_LIMITS, budgetTokens: 5 }, reserveTokens: 6, requestId: "r", now: T0 });
  assert.deepEqual({ ...result }, { admitted: false, reason: "budget", retryAfterMs: null, budgetRemaining: 5, state: { requests: null, tokens: null } });
  assert.deepEqual(starts, [null]);
});

test("a Redis URL is shown without its password", () => {
  assert.equal(redactUrl("redis://user:p%40ss@cache.internal:6380/2"), "redis://user:***@cache.internal:6380/2");
  assert.equal(redactUrl("redis://cache.internal:6379"), "redis://cache.internal:6379");
  assert.equal(redactUrl("not a url with secret"), "(unparseable URL)");
});

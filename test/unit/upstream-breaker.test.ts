import assert from "node:assert/strict";
import { test } from "node:test";
import { CircuitBreaker } from "../../src/backends/upstream/circuit-breaker.js";
import { PrefixIndex, prefixBlocks, promptText } from "../../src/backends/upstream/prefix-index.js";
import { RetryBudget } from "../../src/backends/upstream/retry-budget.js";

const T = 1_000_000;

/** A breaker opened at `T` by `threshold` failures. */
function openedBreaker(options = { failureThreshold: 3, backoffMs: 1000, maxBackoffMs: 3000 }): CircuitBreaker {
  const breaker = new CircuitBreaker(options);
  for (let failure = 0; failure < options.failureThreshold; failure++) breaker.failure(T);
  return breaker;
}

test("breaker: stays closed below the threshold of consecutive failures, opens at it", () => {
  const breaker = new CircuitBreaker({ failureThreshold: 3, backoffMs: 1000, maxBackoffMs: 3000 });
  breaker.failure(T);
  breaker.failure(T);
  assert.equal(breaker.state(T), "closed");
  assert.equal(breaker.available(T), true);
  assert.equal(breaker.retryAt(T), null);
  breaker.failure(T);
  assert.equal(breaker.state(T), "open");
  assert.equal(breaker.available(T), false);
  assert.equal(breaker.consecutiveFailures, 3);
  assert.equal(breaker.retryAt(T), T + 1000);
});

test("breaker: a success between failures resets the count", () => {
  const breaker = new CircuitBreaker({ failureThreshold: 3, backoffMs: 1000, maxBackoffMs: 3000 });
  breaker.failure(T);
  breaker.failure(T);
  breaker.success();
  assert.equal(breaker.consecutiveFailures, 0);
  breaker.failure(T);
  breaker.failure(T);
  assert.equal(breaker.state(T), "closed");
});

test("breaker: open until the backoff is over, then half-open", () => {
  const breaker = openedBreaker();
  assert.equal(breaker.state(T + 999), "open");
  assert.equal(breaker.available(T + 999), false);
  assert.equal(breaker.state(T + 1000), "half_open");
  assert.equal(breaker.retryAt(T + 1000), null);
});

test("breaker: half-open lets exactly one trial through at a time", () => {
  const breaker = openedBreaker();
  assert.equal(breaker.available(T + 1000), true);
  breaker.attempt(T + 1000);
  assert.equal(breaker.available(T + 1000), false);
  assert.equal(breaker.available(T + 5000), false);
  assert.equal(breaker.state(T + 5000), "half_open");
});

test("breaker: a successful trial closes it and restores the first backoff", () => {
  const breaker = openedBreaker();
  breaker.attempt(T + 1000);
  breaker.failure(T + 1000); // trial fails: backoff 2000
  breaker.attempt(T + 3000);
  breaker.success();
  assert.equal(breaker.state(T + 3000), "closed");
  assert.equal(breaker.available(T + 3000), true);
  assert.equal(breaker.consecutiveFailures, 0);
  // Ejected again later: the backoff starts over at 1000, not 4000.
  for (let failure = 0; failure < 3; failure++) breaker.failure(T + 10_000);
  assert.equal(breaker.retryAt(T + 10_000), T + 11_000);
});

test("breaker: a failed trial re-opens with the backoff doubled, capped at the maximum", () => {
  const breaker = openedBreaker({ failureThreshold: 2, backoffMs: 1000, maxBackoffMs: 3000 });
  let now = T + 1000;
  const backoffs: number[] = [];
  for (let trial = 0; trial < 4; trial++) {
    assert.equal(breaker.available(now), true);
    breaker.attempt(now);
    breaker.failure(now);
    assert.equal(breaker.state(now), "open");
    const retryAt = breaker.retryAt(now) as number;
    backoffs.push(retryAt - now);
    now = retryAt;
  }
  assert.deepEqual(backoffs, [2000, 3000, 3000, 3000]);
});

test("breaker: a single failure in half-open re-opens it, whatever the threshold", () => {
  const breaker = openedBreaker({ failureThreshold: 5, backoffMs: 1000, maxBackoffMs: 60_000 });
  breaker.attempt(T + 1000);
  breaker.failure(T + 1000);
  assert.equal(breaker.state(T + 1000), "open");
});

test("breaker: settle() frees the trial slot without deciding", () => {
  const breaker = openedBreaker();
  breaker.attempt(T + 1000);
  assert.equal(breaker.available(T + 1000), false);
  breaker.settle();
  assert.equal(breaker.state(T + 1000), "half_open");
  assert.equal(breaker.available(T + 1000), true);
  assert.equal(breaker.consecutiveFailures, 3);
});

test("breaker: requests in the closed state are not trials", () => {
  const breaker = new CircuitBreaker({ failureThreshold: 3, backoffMs: 1000, maxBackoffMs: 3000 });
  breaker.attempt(T);
  breaker.attempt(T);
  assert.equal(breaker.available(T), true);
});

test("retry budget: with no requests, minPerSecond over the 10 s window is the floor", () => {
  const budget = new RetryBudget(0.2, 2);
  for (let retry = 0; retry < 20; retry++) assert.equal(budget.tryRetry(T + retry), true, `retry ${retry + 1}`);
  assert.equal(budget.tryRetry(T + 20), false);
});

test("retry budget: retries are a ratio of requests sent", () => {
  const budget = new RetryBudget(0.5, 0);
  assert.equal(budget.tryRetry(T), false);
  for (let request = 0; request < 10; request++) budget.request(T);
  for (let retry = 0; retry < 5; retry++) assert.equal(budget.tryRetry(T), true, `retry ${retry + 1}`);
  assert.equal(budget.tryRetry(T), false);
  // A refused retry took nothing: two more requests allow exactly one more.
  budget.request(T);
  budget.request(T);
  assert.equal(budget.tryRetry(T), true);
  assert.equal(budget.tryRetry(T), false);
});

test("retry budget: ratio and floor add up", () => {
  const budget = new RetryBudget(0.2, 1);
  for (let request = 0; request < 50; request++) budget.request(T);
  let granted = 0;
  while (budget.tryRetry(T)) granted++;
  assert.equal(granted, 10 + 10);
});

test("retry budget: the window slides — retries free up 10 s later, slot by slot", () => {
  const budget = new RetryBudget(0, 0.2); // two retries per window
  assert.equal(budget.tryRetry(T), true);
  assert.equal(budget.tryRetry(T + 5000), true);
  assert.equal(budget.tryRetry(T + 5000), false);
  assert.equal(budget.tryRetry(T + 9999), false);
  // The retry of T has left the window; the one of T + 5 s has not.
  assert.equal(budget.tryRetry(T + 10_000), true);
  assert.equal(budget.tryRetry(T + 10_000), false);
  assert.equal(budget.tryRetry(T + 15_000), true);
});

test("retry budget: requests leave the window too", () => {
  const budget = new RetryBudget(1, 0);
  for (let request = 0; request < 3; request++) budget.request(T);
  assert.equal(budget.tryRetry(T + 9000), true);
  assert.equal(budget.tryRetry(T + 20_000), false);
  // Nothing of the old window is left: one new request allows exactly one retry.
  budget.request(T + 20_000);
  assert.equal(budget.tryRetry(T + 20_000), true);
  assert.equal(budget.tryRetry(T + 20_000), false);
  // A long silence clears everything at once.
  budget.request(T + 100_000);
  assert.equal(budget.tryRetry(T + 100_000), true);
  assert.equal(budget.tryRetry(T + 100_000), false);
});

test("prefixBlocks: only whole blocks, one key per block", () => {
  assert.deepEqual(prefixBlocks("", 4), []);
  assert.deepEqual(prefixBlocks("abc", 4), []);
  assert.equal(prefixBlocks("abcd", 4).length, 1);
  assert.equal(prefixBlocks("abcdefghij", 4).length, 2);
  // A partial last block changes nothing.
  assert.deepEqual(prefixBlocks("abcdefghij", 4), prefixBlocks("abcdefghXY", 4));
  assert.deepEqual(prefixBlocks("abcdefgh", 4), prefixBlocks("abcdefgh", 4));
});

test("prefixBlocks: keys are chained — a key stands for the whole prefix up to its block", () => {
  const [first, second] = prefixBlocks("abcdabcd", 4);
  assert.notEqual(first, second, "the same block text at another position has another key");
  // Same first block, different second: first keys equal, second differ.
  const one = prefixBlocks("abcdXXXX", 4);
  const two = prefixBlocks("abcdYYYY", 4);
  assert.equal(one[0], two[0]);
  assert.notEqual(one[1], two[1]);
  // Different first block, same second: the second keys differ too.
  assert.notEqual(prefixBlocks("AAAAzzzz", 4)[1], prefixBlocks("BBBBzzzz", 4)[1]);
  // Not a key of the block alone.
  assert.notEqual(prefixBlocks("zzzz", 4)[0], prefixBlocks("AAAAzzzz", 4)[1]);
});

test("prefixBlocks: multi-byte text", () => {
  assert.notEqual(prefixBlocks("日本語で", 4)[0], prefixBlocks("日本語だ", 4)[0]);
  assert.equal(prefixBlocks("日本語です", 4).length, 1);
  assert.deepEqual(prefixBlocks("日本語です", 4), prefixBlocks("日本語でX", 4));
});

test("prefixBlocks keeps two prompts apart when a block boundary splits an emoji", () => {
  // "abc😀" and "abc😁": the boundary falls between each emoji's surrogates; hashing each half
  // as UTF-8 turns both halves into U+FFFD, so the prompts are indistinguishable.
  assert.notDeepEqual(prefixBlocks("abc\u{1F600}wxyz", 4), prefixBlocks("abc\u{1F601}wxyz", 4));
});

test("promptText: role and content boundaries are kept", () => {
  assert.notEqual(promptText([{ role: "user", content: "ab" }]), promptText([{ role: "usera", content: "b" }]));
  assert.notEqual(promptText([{ role: "user", content: "a" }, { role: "user", content: "b" }]), promptText([{ role: "user", content: "ab" }]));
  // A conversation's text starts with the text of its earlier turns.
  const earlier = promptText([{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }]);
  const later = promptText([{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }]);
  assert.ok(later.startsWith(earlier));
});

test("prefix index: match counts the leading blocks each candidate holds", () => {
  const index = new PrefixIndex<string>(100);
  assert.deepEqual(index.match(["k0", "k1"], ["A"]), new Map());
  index.record(["k0", "k1", "k2"], "A");
  index.record(["k0"], "B");
  assert.deepEqual(index.match(["k0", "k1", "k2", "k3"], ["A", "B", "C"]), new Map([["A", 3], ["B", 1]]));
  // Candidates not offered are not counted.
  assert.deepEqual(index.match(["k0", "k1", "k2"], ["B", "C"]), new Map([["B", 1]]));
  assert.deepEqual(index.match(["k0", "k1"], ["C"]), new Map());
});

test("prefix index: matching stops at the first block no candidate holds", () => {
  const index = new PrefixIndex<string>(100);
  index.record(["k0", "k2"], "A");
  assert.deepEqual(index.match(["k0", "k1", "k2"], ["A"]), new Map([["A", 1]]));
  assert.deepEqual(index.match(["x", "k0"], ["A"]), new Map());
});

test("prefix index: bounded, least recently recorded blocks forgotten first, a prompt's tail before its head", () => {
  const index = new PrefixIndex<string>(3);
  index.record(["a", "b", "c"], "A");
  assert.equal(index.size, 3);
  index.record(["a"], "B"); // refreshes "a"
  index.record(["d"], "B"); // evicts "c": the deepest block of the oldest prompt goes first
  assert.equal(index.size, 3);
  assert.deepEqual(index.match(["a", "b", "c"], ["A", "B"]), new Map([["A", 2], ["B", 1]]), "the head still matches");
  assert.deepEqual(index.match(["d"], ["B"]), new Map([["B", 1]]));
  // Matching is not use: it does not refresh recency.
  index.match(["b"], ["A"]);
  index.record(["e"], "B"); // evicts "b"
  assert.deepEqual(index.match(["a", "b"], ["A"]), new Map([["A", 1]]));
});

test("prefix index: forget drops a holder, and blocks nobody else holds", () => {
  const index = new PrefixIndex<string>(100);
  index.record(["k0", "k1"], "A");
  index.record(["k0"], "B");
  index.forget("A");
  assert.equal(index.size, 1);
  assert.deepEqual(index.match(["k0", "k1"], ["A", "B"]), new Map([["B", 1]]));
  index.forget("B");
  assert.equal(index.size, 0);
});

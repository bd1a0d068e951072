import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultThreads, SINGLE_THREAD_MODEL_BYTES, SINGLE_THREAD_MODEL_BYTES_UNTUNED } from "../../src/backends/local/threads.js";

test("with a persistent threadpool: one thread for tiny models, every math core from 64 MiB", () => {
  assert.equal(defaultThreads(1_200_000, 2), 1);
  assert.equal(defaultThreads(SINGLE_THREAD_MODEL_BYTES - 1, 2), 1);
  assert.equal(defaultThreads(SINGLE_THREAD_MODEL_BYTES, 2), 2);
  assert.equal(defaultThreads(525_000_000, 2), 2);
  assert.equal(defaultThreads(8_100_000_000, 16), 16);
  assert.equal(defaultThreads(8_100_000_000, 0), 1);
});

test("without it (ggml's per-step threads): one thread below 1 GiB", () => {
  assert.equal(defaultThreads(525_000_000, 2, false), 1);
  assert.equal(defaultThreads(SINGLE_THREAD_MODEL_BYTES_UNTUNED, 2, false), 2);
  assert.equal(defaultThreads(8_100_000_000, 2, false), 2);
  assert.equal(defaultThreads(8_100_000_000, 0, false), 1);
});

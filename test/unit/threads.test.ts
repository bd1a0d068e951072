import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultThreads, SINGLE_THREAD_MODEL_BYTES } from "../../src/backends/local/threads.js";

test("models under 1 GiB decode on one thread; larger ones on every math core", () => {
  assert.equal(defaultThreads(1_200_000, 2), 1);
  assert.equal(defaultThreads(525_000_000, 2), 1);
  assert.equal(defaultThreads(SINGLE_THREAD_MODEL_BYTES, 2), 2);
  assert.equal(defaultThreads(8_100_000_000, 2), 2);
  assert.equal(defaultThreads(8_100_000_000, 16), 16);
  assert.equal(defaultThreads(8_100_000_000, 0), 1);
});

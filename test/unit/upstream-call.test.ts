import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { UpstreamCall } from "../../src/backends/upstream/upstream-call.js";

const silent = (ms: number) => `no data for ${ms} ms`;
const firstToken = (ms: number) => `no first token within ${ms} ms`;

test("a phase re-armed before its deadline does not fire; the last phase's words say which fired", async () => {
  const client = new AbortController();
  const call = new UpstreamCall(client.signal, 10_000);
  try {
    call.phase(firstToken, 300);
    for (let chunk = 0; chunk < 6; chunk++) {
      await sleep(50);
      call.phase(silent, 300); // same length: the timer is refreshed, not replaced
    }
    assert.equal(call.signal.aborted, false, "300 ms of chunks 50 ms apart never hit a 300 ms deadline");
    await sleep(600);
    assert.equal(call.signal.aborted, true);
    assert.equal(call.timedOut, "no data for 300 ms");
    assert.match(String((call.signal.reason as Error).message), /no data for 300 ms/);
  } finally {
    call.dispose();
  }
});

test("a phase of another length replaces the timer", async () => {
  const call = new UpstreamCall(new AbortController().signal, 10_000);
  try {
    call.phase(firstToken, 5_000);
    call.phase(silent, 20);
    await sleep(80);
    assert.equal(call.timedOut, "no data for 20 ms");
  } finally {
    call.dispose();
  }
});

test("the total deadline fires whatever the phases do", async () => {
  const call = new UpstreamCall(new AbortController().signal, 40);
  try {
    for (let chunk = 0; chunk < 6; chunk++) {
      call.phase(silent, 1_000);
      await sleep(15);
    }
    assert.equal(call.timedOut, "no complete answer within 40 ms");
  } finally {
    call.dispose();
  }
});

test("the client's signal aborts the call with its reason, already aborted or later; dispose stops listening", () => {
  const before = new AbortController();
  const reason = new Error("client disconnected");
  before.abort(reason);
  const early = new UpstreamCall(before.signal, 10_000);
  assert.equal(early.signal.reason, reason);
  early.dispose();

  const later = new AbortController();
  const call = new UpstreamCall(later.signal, 10_000);
  assert.equal(call.signal.aborted, false);
  later.abort(reason);
  assert.equal(call.signal.reason, reason);
  assert.equal(call.timedOut, null, "a client abort is not a deadline");
  call.dispose();

  const client = new AbortController();
  const disposed = new UpstreamCall(client.signal, 10_000);
  disposed.dispose();
  client.abort(reason);
  assert.equal(disposed.signal.aborted, false, "a disposed call no longer follows the client's signal");
});

test("dispose clears the timers", async () => {
  const call = new UpstreamCall(new AbortController().signal, 30);
  call.phase(silent, 10);
  call.dispose();
  await sleep(60);
  assert.equal(call.signal.aborted, false);
  assert.equal(call.timedOut, null);
});

/**
 * The queue in front of a model: fair across keys (one key's burst does not starve
 * another), and bounded in time (a request that waits past --queue-timeout gets a 503).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { KeyService } from "../../src/access/key-service.js";
import { parseKeySpec } from "../../src/access/key-spec.js";
import { tinyQwen2 } from "../helpers/models.js";
import { postChat, startParley, type RunningParley } from "../helpers/parley.js";
import { until } from "../helpers/wait.js";

const HOLD = { model: "test-model", messages: [{ role: "user", content: "Write a very long story." }], max_tokens: 4096, stream: true };
const SHORT = { model: "test-model", messages: [{ role: "user", content: "Hi" }], max_tokens: 4 };


/** Starts a long streaming request that holds the only sequence until aborted. */
async function holdSlot(parley: RunningParley, apiKey?: string): Promise<AbortController> {
  const controller = new AbortController();
  const response = await postChat(parley, HOLD, { signal: controller.signal, ...(apiKey !== undefined ? { apiKey } : {}) });
  assert.equal(response.status, 200);
  void response.body?.getReader().read();
  await until(() => parley.backend.activity().running === 1, "the slot to be held");
  return controller;
}

let parley: RunningParley;
before(async () => {
  parley = await startParley({ modelPath: await tinyQwen2(), contextSize: 8192, parallel: 1, queueSize: 8, queueTimeoutMs: 400 });
});
after(() => parley.close());

test("a request that waits past the queue timeout gets 503 with Retry-After", async () => {
  const hold = await holdSlot(parley);
  try {
    const response = await postChat(parley, SHORT);
    assert.equal(response.status, 503);
    assert.ok(response.headers.get("retry-after"));
    const body = (await response.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "server_overloaded");
    assert.match(body.error.message, /waited 0\.4 s/);
    assert.equal(parley.backend.activity().waiting, 0);
  } finally {
    hold.abort();
  }
  await until(() => parley.backend.activity().running === 0, "the slot to be freed");
});

test("one key's burst does not starve another key waiting behind it", async () => {
  const slow = await startParley({ modelPath: await tinyQwen2(), contextSize: 8192, parallel: 1, queueSize: 8 });
  try {
    const aliceKey = await new KeyService(slow.access.store).create(parseKeySpec({ name: "alice" }));
    const bobKey = await new KeyService(slow.access.store).create(parseKeySpec({ name: "bob" }));
    slow.access.keysChanged();
    const hold = await holdSlot(slow, aliceKey.secret);
    const finished: string[] = [];
    const send = (name: string, secret: string): Promise<void> =>
      postChat(slow, SHORT, { apiKey: secret }).then(async (response) => {
        assert.equal(response.status, 200);
        await response.arrayBuffer();
        finished.push(name);
      });
    const burst = [send("alice-1", aliceKey.secret)];
    await until(() => slow.backend.activity().waiting === 1, "alice-1 to queue");
    burst.push(send("alice-2", aliceKey.secret));
    await until(() => slow.backend.activity().waiting === 2, "alice-2 to queue");
    burst.push(send("alice-3", aliceKey.secret));
    await until(() => slow.backend.activity().waiting === 3, "alice-3 to queue");
    burst.push(send("bob-1", bobKey.secret));
    await until(() => slow.backend.activity().waiting === 4, "bob-1 to queue");
    hold.abort();
    await Promise.all(burst);
    assert.ok(finished.indexOf("bob-1") < finished.indexOf("alice-2"), `bob waited behind alice's burst: ${finished.join(", ")}`);
    assert.deepEqual(finished.filter((name) => name.startsWith("alice")), ["alice-1", "alice-2", "alice-3"], "first in, first out within a key");
  } finally {
    await slow.close();
  }
});

/** A key store or limiter that cannot be reached is a 503 storage_unavailable with Retry-After, never a 500. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { KeyService } from "../../src/access/key-service.js";
import { parseKeySpec } from "../../src/access/key-spec.js";
import { STORIES_260K } from "../helpers/models.js";
import { postChat, startParley } from "../helpers/parley.js";

test("a closed key store answers 503 storage_unavailable", async () => {
  const parley = await startParley({ modelPath: STORIES_260K });
  try {
    const issued = await new KeyService(parley.access.store).create(parseKeySpec({ name: "store-down", rpm: 100 }));
    parley.access.keysChanged();
    const ok = await postChat(parley, { model: "test-model", messages: [{ role: "user", content: "Hi" }], max_tokens: 2 }, { apiKey: issued.secret });
    assert.equal(ok.status, 200);
    await parley.access.store.close();
    const down = await postChat(parley, { model: "test-model", messages: [{ role: "user", content: "Hi" }], max_tokens: 2 }, { apiKey: issued.secret });
    assert.equal(down.status, 503);
    assert.equal(down.headers.get("retry-after"), "5");
    const body = (await down.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "storage_unavailable");
    assert.match(body.error.message, /key store/);
  } finally {
    await parley.close().catch(() => undefined);
  }
});

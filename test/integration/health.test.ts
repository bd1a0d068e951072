/** `/health` and requests while a model loads: 503 with Retry-After, then 200 once it is ready. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { LocalBackend } from "../../src/backends/local/local-backend.js";
import { ModelRegistry } from "../../src/backends/registry.js";
import { SEED_RANGES } from "../../src/protocol/parameters.js";
import { buildServer } from "../../src/server/app.js";
import { STORIES_260K } from "../helpers/models.js";
import { openTestAccess, testLlama } from "../helpers/parley.js";

test("503 while the model loads, 200 when ready; no auth on /health", async () => {
  const backend = new LocalBackend(await testLlama(), { id: "stories", modelPath: STORIES_260K, threads: 1 });
  const registry = new ModelRegistry();
  registry.add(backend);
  const testAccess = await openTestAccess(["health-test-key"]);
  const app = buildServer({ registry, access: testAccess.access, ranges: SEED_RANGES, logger: false });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  try {
    const loading = await fetch(`${url}/health`);
    assert.equal(loading.status, 503);
    assert.equal(loading.headers.get("retry-after"), "5");
    assert.deepEqual(await loading.json(), { status: "loading", models: { stories: "loading" } });

    const early = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: "Bearer health-test-key", "content-type": "application/json" },
      body: JSON.stringify({ model: "stories", messages: [{ role: "user", content: "Hi" }] }),
    });
    assert.equal(early.status, 503);
    assert.ok(early.headers.get("retry-after"));
    assert.equal(((await early.json()) as { error: { code: string } }).error.code, "model_loading");

    await backend.load();
    const ready = await fetch(`${url}/health`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: "ok", models: { stories: "ready" } });
  } finally {
    await app.close();
    await registry.dispose();
    await testAccess.close();
  }
});

test("a model that fails to load makes /health 503 and requests 503 model_unavailable", async () => {
  const backend = new LocalBackend(await testLlama(), { id: "broken", modelPath: "/nonexistent.gguf", threads: 1 });
  const registry = new ModelRegistry();
  registry.add(backend);
  const testAccess = await openTestAccess();
  const app = buildServer({ registry, access: testAccess.access, ranges: SEED_RANGES, logger: false });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  try {
    await assert.rejects(backend.load());
    assert.equal(backend.state(), "failed");
    const health = await fetch(`${url}/health`);
    assert.equal(health.status, 503);
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "broken", messages: [{ role: "user", content: "Hi" }] }),
    });
    assert.equal(response.status, 503);
    assert.equal(((await response.json()) as { error: { code: string } }).error.code, "model_unavailable");
  } finally {
    await app.close();
    await registry.dispose();
    await testAccess.close();
  }
});

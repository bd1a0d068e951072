/**
 * `parley serve` as a user runs it: a child process on an ephemeral port, real models,
 * and the offline paths (default model → labelled demo; hf: URI → clear error).
 */
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { CLI, runCli, type CliProcess } from "../helpers/cli.js";
import { startFakeUpstream, type FakeUpstream } from "../helpers/fake-upstream.js";
import { STORIES_260K } from "../helpers/models.js";

const LISTENING = /Parley listening on (http:\/\/[^"\s]+)/;

async function waitHealthy(url: string): Promise<void> {
  for (let attempt = 0; attempt < 600; attempt++) {
    const response = await fetch(`${url}/health`).catch(() => undefined);
    if (response?.status === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("never became healthy");
}

before(() => assert.ok(existsSync(CLI), `${CLI} is missing: run \`npm run build\` first (npm test does)`));

describe("serve a local file with aliases and keys", () => {
  let server: CliProcess;
  let url = "";
  before(async () => {
    server = runCli([
      "serve", "--model", STORIES_260K, "--port", "0", "--api-key", "cli-test-key-1",
      "--model-name", "Qwen/Qwen2-7B-Instruct", "--model-name", "stories", "--threads", "1",
    ]);
    url = (await server.waitFor(LISTENING))[1] ?? "";
    await waitHealthy(url);
  });
  after(() => server.stop());

  test("lists every name and answers by alias", async () => {
    const headers = { authorization: "Bearer cli-test-key-1", "content-type": "application/json" };
    const models = (await (await fetch(`${url}/v1/models`, { headers })).json()) as { data: Array<{ id: string }> };
    assert.deepEqual(models.data.map((model) => model.id), ["Qwen/Qwen2-7B-Instruct", "stories"]);
    const response = await fetch(`${url}/model/api/v1/chat/completions`, {
      method: "POST",
      headers,
      body: JSON.stringify({ model: "stories", messages: [{ role: "user", content: "Hi" }], max_tokens: 5 }),
    });
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { model: string }).model, "stories");
  });

  test("a missing key is refused", async () => {
    assert.equal((await fetch(`${url}/v1/models`)).status, 401);
  });

  test("one log line per request, never the key", async () => {
    await fetch(`${url}/v1/models`, { headers: { authorization: "Bearer cli-test-key-1" } });
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.match(server.output(), /"msg":"chat completion"/);
    assert.ok(!server.output().includes("cli-test-key-1"));
  });

  test("SIGTERM exits 0", async () => {
    assert.equal(await server.stop(), 0);
  });
});

describe("serve --config: a local model and an upstream pool side by side", () => {
  let server: CliProcess;
  let upstream: FakeUpstream;
  let dir = "";
  let url = "";
  before(async () => {
    upstream = await startFakeUpstream({ apiKey: "upstream-key-from-env" });
    dir = mkdtempSync(path.join(os.tmpdir(), "parley-config-"));
    copyFileSync(STORIES_260K, path.join(dir, "stories.gguf"));
    const config = path.join(dir, "parley.yaml");
    writeFileSync(
      config,
      [
        "models:",
        "  - name: local",
        "    model: ./stories.gguf      # relative to this file",
        "    threads: 1",
        "  - name: remote",
        "    backend: upstream",
        "    upstream_model: served-there",
        "    upstreams:",
        `      - url: ${upstream.url}`,
        "        api_key: ${UPSTREAM_KEY}",
      ].join("\n"),
    );
    server = runCli(["serve", "--config", config, "--port", "0", "--data-dir", dir], { UPSTREAM_KEY: "upstream-key-from-env" });
    url = (await server.waitFor(LISTENING))[1] ?? "";
    await waitHealthy(url);
  });
  after(async () => {
    await server.stop();
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("both answer, and /v1/models lists both", async () => {
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string }> };
    assert.deepEqual(models.data.map((model) => model.id), ["local", "remote"]);
    for (const model of ["local", "remote"]) {
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model, messages: [{ role: "user", content: "Hi" }], max_tokens: 5 }),
      });
      assert.equal(response.status, 200, await response.clone().text());
      assert.equal(((await response.json()) as { model: string }).model, model);
    }
    const sent = upstream.requests.find((request) => request.method === "POST");
    assert.equal(sent?.headers.authorization, "Bearer upstream-key-from-env", "the key came from the environment");
    assert.equal((sent?.body as { model: string }).model, "served-there");
    assert.ok(!server.output().includes("upstream-key-from-env"), "the upstream key is never logged");
  });
});

describe("offline", () => {
  let home = "";
  before(() => {
    home = mkdtempSync(path.join(os.tmpdir(), "parley-home-"));
  });
  after(() => rmSync(home, { recursive: true, force: true }));

  test("without --model the default model cannot download, so a labelled random demo model is served", async () => {
    const server = runCli(["serve", "--port", "0"], { PARLEY_HOME: home });
    try {
      const url = (await server.waitFor(LISTENING))[1] ?? "";
      assert.match(server.output(), /could not be downloaded.*RANDOM weights/);
      await waitHealthy(url);
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string }> };
      assert.deepEqual(models.data.map((model) => model.id), ["parley-demo-random-weights"]);
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "parley-demo-random-weights", messages: [{ role: "user", content: "Hi" }], max_tokens: 8 }),
      });
      const body = (await response.json()) as { model: string; usage: { completion_tokens: number } };
      assert.equal(response.status, 200);
      assert.match(body.model, /random/);
      assert.ok(body.usage.completion_tokens > 0);
      assert.ok(existsSync(path.join(home, "models", "parley-demo-random-weights.gguf")));
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test("an hf: model that cannot be downloaded is a clear error, exit 1", async () => {
    const server = runCli(["serve", "--model", "hf:nobody/no-such-model-GGUF:Q4_K_M", "--port", "0"], { PARLEY_HOME: home });
    assert.equal(await server.exited(), 1);
    assert.match(server.output(), /Could not download hf:nobody\/no-such-model-GGUF:Q4_K_M/);
    assert.ok(!server.output().includes("    at "), "no stack trace");
  });
});

describe("bad start-up input", () => {
  const cases: Array<[string, string[], RegExp]> = [
    ["no keys on a public address", ["--host", "0.0.0.0"], /refusing to serve on 0\.0\.0\.0 without API keys/],
    ["a port that is not a number", ["--port", "http"], /--port must be an integer/],
    ["a missing model file", ["--model", "/nonexistent/model.gguf"], /Model file not found/],
    ["a bad range", ["--range", "temperature=3:1"], /MIN must not exceed MAX/],
  ];
  for (const [name, args, message] of cases) {
    test(name, async () => {
      const server = runCli(["serve", "--model", STORIES_260K, "--port", "0", ...args]);
      assert.equal(await server.exited(), 1);
      assert.match(server.output(), message);
    });
  }

  test("a config file with a misspelt setting names the file and the setting's path", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "parley-config-"));
    const config = path.join(dir, "parley.yaml");
    writeFileSync(config, "models:\n  - name: pool\n    backend: upstream\n    timeouts: { conect_ms: 5 }\n    upstreams: [{ url: http://10.0.0.5:8000/v1 }]\n");
    const server = runCli(["serve", "--config", config, "--port", "0"]);
    assert.equal(await server.exited(), 1);
    assert.match(server.output(), /parley\.yaml: models\[0\]\.timeouts\.conect_ms: unknown setting/);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe("downloaded once", () => {
  let home = "";
  before(() => {
    home = mkdtempSync(path.join(os.tmpdir(), "parley-home-"));
  });
  after(() => rmSync(home, { recursive: true, force: true }));

  test("an hf: model already downloaded is found offline through the cache's manifest", async () => {
    const uri = "hf:example/stories-GGUF:Q8_0";
    mkdirSync(path.join(home, "models"), { recursive: true });
    const cached = path.join(home, "models", "stories.gguf");
    copyFileSync(STORIES_260K, cached);
    writeFileSync(path.join(home, "models", "downloads.json"), JSON.stringify({ [uri]: cached }));
    const server = runCli(["serve", "--model", uri, "--port", "0", "--threads", "1"], { PARLEY_HOME: home });
    try {
      const url = (await server.waitFor(LISTENING))[1] ?? "";
      await waitHealthy(url);
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string }> };
      assert.deepEqual(models.data.map((model) => model.id), ["example/stories"]);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});

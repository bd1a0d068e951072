import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { buildServeConfig, ConfigError, isLoopbackHost, parseRanges } from "../../src/config/serve-config.js";
import { defaultModelName, isRemoteModelUri } from "../../src/models/resolve-model.js";

test("defaults", () => {
  const config = buildServeConfig({}, {});
  assert.equal(config.host, "127.0.0.1");
  assert.equal(config.port, 8080);
  assert.equal(config.bodyLimit, 1024 * 1024);
  assert.deepEqual(config.models, [
    { backend: "local", source: undefined, names: [], threads: undefined, contextSize: undefined, parallel: 1, queueSize: undefined, queueTimeoutMs: undefined },
  ]);
  assert.deepEqual(config.apiKeys, []);
});

test("keys come from flags and PARLEY_API_KEYS", () => {
  const config = buildServeConfig({ apiKey: ["flag-key-123"] }, { PARLEY_API_KEYS: " env-key-456 , env-key-789," });
  assert.deepEqual(config.apiKeys, ["flag-key-123", "env-key-456", "env-key-789"]);
  assert.throws(() => buildServeConfig({ apiKey: ["short"] }, {}), ConfigError);
});

test("numbers are validated with the flag named", () => {
  assert.throws(() => buildServeConfig({ port: "http" }, {}), /--port must be an integer/);
  assert.throws(() => buildServeConfig({ port: "70000" }, {}), /--port/);
  assert.throws(() => buildServeConfig({ threads: "0" }, {}), /--threads/);
  assert.throws(() => buildServeConfig({ parallel: "2.5" }, {}), /--parallel/);
  assert.equal(buildServeConfig({ port: "0" }, {}).port, 0);
});

test("ranges can be widened per deployment", () => {
  const ranges = parseRanges(["temperature=0:2", "max_tokens=1:8192"]);
  assert.deepEqual(ranges.temperature, { min: 0, max: 2 });
  assert.equal(ranges.max_tokens.max, 8192);
  assert.equal(ranges.top_p.minExclusive, true);
  assert.throws(() => parseRanges(["temp=0:2"]), /NAME one of/);
  assert.throws(() => parseRanges(["temperature=2:0"]), /MIN must not exceed MAX/);
  assert.throws(() => parseRanges(["max_tokens=0:10"]), /at least 1/);
});

test("loopback hosts", () => {
  for (const host of ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"]) assert.ok(isLoopbackHost(host), host);
  for (const host of ["0.0.0.0", "::", "192.168.1.2", "example.com"]) assert.ok(!isLoopbackHost(host), host);
});

test("model names derived from sources", () => {
  assert.equal(defaultModelName("/models/qwen2-7b-instruct-q4_k_m.gguf"), "qwen2-7b-instruct-q4_k_m");
  assert.equal(defaultModelName("hf:Qwen/Qwen2-0.5B-Instruct-GGUF:Q4_K_M"), "Qwen/Qwen2-0.5B-Instruct");
  assert.equal(defaultModelName("https://example.com/dir/model.gguf?download=1"), "model");
  assert.ok(isRemoteModelUri("hf:a/b"));
  assert.ok(!isRemoteModelUri("./hf-model.gguf"));
});

test("--config: the file's models replace the default model; a --model beside it is served first", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "parley-config-"));
  try {
    const file = path.join(dir, "parley.yaml");
    writeFileSync(file, "models:\n  - name: pool\n    backend: upstream\n    upstreams:\n      - url: http://10.0.0.5:8000/v1/\n");
    const fromFile = buildServeConfig({ config: file }, {});
    assert.deepEqual(fromFile.models.map((model) => [model.backend, model.names]), [["upstream", ["pool"]]]);
    const upstream = fromFile.models[0];
    assert.ok(upstream?.backend === "upstream");
    assert.equal(upstream.upstreams[0]?.url, "http://10.0.0.5:8000/v1", "trailing slash dropped");
    assert.equal(upstream.upstreamModel, "pool");
    const both = buildServeConfig({ config: file, model: "./a.gguf", modelName: ["a"] }, {});
    assert.deepEqual(both.models.map((model) => [model.backend, model.names]), [["local", ["a"]], ["upstream", ["pool"]]]);
    assert.throws(() => buildServeConfig({ config: file, modelName: ["a"] }, {}), /--model-name names the --model flag's model/);
    assert.throws(() => buildServeConfig({ config: path.join(dir, "missing.yaml") }, {}), /cannot read the config file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("engine: the threadpool on and measured CPU kernels (auto) by default; a variant name is checked", () => {
  assert.deepEqual(buildServeConfig({}, {}).engine, { threadpool: true, cpuKernels: undefined, nativeLoop: true, flashAttention: "auto" });
  assert.deepEqual(buildServeConfig({ cpuKernels: "auto", threadpool: false, nativeLoop: false }, {}).engine, {
    threadpool: false,
    cpuKernels: undefined,
    nativeLoop: false,
    flashAttention: "auto",
  });
  assert.equal(buildServeConfig({ cpuKernels: "haswell" }, {}).engine.cpuKernels, "haswell");
  assert.equal(buildServeConfig({ cpuKernels: "ggml" }, {}).engine.cpuKernels, "ggml");
  for (const bad of ["../x", "Haswell", "", "zen 4", "a".repeat(33)]) {
    assert.throws(() => buildServeConfig({ cpuKernels: bad }, {}), /--cpu-kernels must be 'auto', 'ggml' or a variant name/, bad);
  }
});

test("engine: flash attention measured (auto) by default, or forced on or off; anything else is named", () => {
  for (const mode of ["auto", "on", "off"] as const) assert.equal(buildServeConfig({ flashAttention: mode }, {}).engine.flashAttention, mode);
  for (const bad of ["true", "ON", "", "1"]) {
    assert.throws(() => buildServeConfig({ flashAttention: bad }, {}), new RegExp(`--flash-attention must be 'auto', 'on' or 'off'; got '${bad}'`), bad);
  }
});

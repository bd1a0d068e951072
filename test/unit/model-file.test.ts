import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { ConfigError } from "../../src/config/config-error.js";
import { parseModelFile, type LocalModelConfig, type UpstreamModelConfig } from "../../src/config/model-file.js";

const FILE = "/etc/parley/parley.yaml";

function upstreamModel(text: string, env: NodeJS.ProcessEnv = {}): UpstreamModelConfig {
  const [model] = parseModelFile(text, FILE, env);
  assert.equal(model?.backend, "upstream");
  return model as UpstreamModelConfig;
}

function localModel(text: string, file = FILE): LocalModelConfig {
  const [model] = parseModelFile(text, file, {});
  assert.equal(model?.backend, "local");
  return model as LocalModelConfig;
}

/** Asserts that parsing fails with a ConfigError whose message matches every pattern. */
function rejects(text: string, patterns: RegExp[], env: NodeJS.ProcessEnv = {}): void {
  assert.throws(
    () => parseModelFile(text, FILE, env),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error));
      for (const pattern of patterns) assert.match(error.message, pattern);
      return true;
    },
  );
}

const FULL = `
models:
  - name: qwen-local
    names: [qwen, default]
    model: /models/qwen2.5-0.5b-instruct-q4_k_m.gguf
    threads: 4
    context_size: 4096
    parallel: 2
    queue_size: 16
    queue_timeout_s: 30
  - name: llama-70b
    backend: upstream
    upstream_model: meta-llama/Llama-3.1-70B-Instruct
    balancing: prefix_affinity
    upstreams:
      - url: http://10.0.0.5:8000/v1
        weight: 2
        api_key: \${VLLM_KEY}
      - url: http://10.0.0.6:8000/v1/
    timeouts:
      first_token_ms: 30000
    retries:
      max_attempts: 2
    health:
      path: /health
      backoff_ms: 500
    prefix_affinity:
      min_match: 0.25
    max_outstanding: 100
`;

test("a full document: every setting read, the rest defaulted", () => {
  const models = parseModelFile(FULL, FILE, { VLLM_KEY: "sk-vllm-123" });
  assert.equal(models.length, 2);
  const local = models[0] as LocalModelConfig;
  assert.deepEqual(local, {
    backend: "local",
    source: "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf",
    names: ["qwen-local", "qwen", "default"],
    threads: 4,
    contextSize: 4096,
    parallel: 2,
    queueSize: 16,
    queueTimeoutMs: 30_000,
  });
  const pool = models[1] as UpstreamModelConfig;
  assert.equal(pool.backend, "upstream");
  assert.deepEqual(pool.names, ["llama-70b"]);
  assert.equal(pool.upstreamModel, "meta-llama/Llama-3.1-70B-Instruct");
  assert.equal(pool.balancing, "prefix_affinity");
  assert.deepEqual(pool.upstreams, [
    { url: "http://10.0.0.5:8000/v1", weight: 2, apiKey: "sk-vllm-123" },
    { url: "http://10.0.0.6:8000/v1", weight: 1, apiKey: undefined },
  ]);
  assert.deepEqual(pool.timeouts, { connectMs: 5000, firstTokenMs: 30_000, idleMs: 30_000, totalMs: 600_000 });
  assert.deepEqual(pool.retries, { maxAttempts: 2, budgetRatio: 0.2, minPerSecond: 5, maxRetryAfterMs: 2000 });
  assert.deepEqual(pool.health, { path: "/health", intervalMs: 5000, timeoutMs: 2000, failureThreshold: 3, backoffMs: 500, maxBackoffMs: 60_000 });
  assert.deepEqual(pool.prefixAffinity, { minMatch: 0.25, balanceAbs: 32, balanceRel: 1.5, blockChars: 64, maxBlocks: 100_000 });
  assert.equal(pool.maxOutstanding, 100);
});

test("a minimal upstream model: defaults everywhere, the name sent upstream is its first name", () => {
  const pool = upstreamModel("models:\n  - name: m\n    backend: upstream\n    upstreams: [{url: 'https://api.example.com/v1'}]\n");
  assert.equal(pool.upstreamModel, "m");
  assert.equal(pool.balancing, "least_outstanding");
  assert.equal(pool.health.path, undefined);
  assert.equal(pool.maxOutstanding, 4096);
  assert.equal(pool.retries.maxAttempts, 3);
  assert.equal(pool.upstreams[0]?.url, "https://api.example.com/v1");
});

test("max_backoff_ms defaults to at least backoff_ms, and may not be below it", () => {
  assert.equal(upstreamModel("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1'}], health: {backoff_ms: 120000}}").health.maxBackoffMs, 120_000);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1'}], health: {backoff_ms: 5000, max_backoff_ms: 1000}}", [/models\[0\]\.health\.max_backoff_ms/, /at least backoff_ms/]);
});

test("${VAR} is replaced by the environment, anywhere in a string", () => {
  const pool = upstreamModel("models:\n  - name: m\n    backend: upstream\n    upstreams:\n      - url: http://${HOST}:${PORT}/v1\n        api_key: ${KEY}\n", {
    HOST: "gpu-1",
    PORT: "8001",
    KEY: "secret-key",
  });
  assert.equal(pool.upstreams[0]?.url, "http://gpu-1:8001/v1");
  assert.equal(pool.upstreams[0]?.apiKey, "secret-key");
  // Only ${NAME} is a reference; $NAME is text.
  assert.equal(upstreamModel("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1', api_key: '$KEY'}]}").upstreams[0]?.apiKey, "$KEY");
});

test("an unset variable is an error naming the variable and where it is used", () => {
  rejects("models:\n  - name: m\n    backend: upstream\n    upstreams:\n      - url: http://h/v1\n        api_key: ${MISSING_KEY}\n", [/parley\.yaml/, /models\[0\]\.upstreams\[0\]\.api_key/, /MISSING_KEY is not set/]);
  // Set but empty is not a usable key either.
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1', api_key: '${EMPTY}'}]}", [/api_key: must be a non-empty string/], { EMPTY: "" });
});

test("unknown keys are refused with their path", () => {
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1'}], timeouts: {conect_ms: 100}}", [/^\/etc\/parley\/parley\.yaml: models\[0\]\.timeouts\.conect_ms: unknown setting/, /connect_ms/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1', wieght: 2}]}", [/models\[0\]\.upstreams\[0\]\.wieght: unknown setting/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1'}], retries: {max_attempt: 2}}", [/models\[0\]\.retries\.max_attempt/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1'}], health: {interval: 2}}", [/models\[0\]\.health\.interval/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1'}], prefix_affinity: {min_macth: 0.2}}", [/models\[0\]\.prefix_affinity\.min_macth/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1'}], threads: 4}", [/models\[0\]\.threads: unknown setting/]);
  rejects("models:\n  - {name: m, model: /m.gguf, upstreams: []}", [/models\[0\]\.upstreams: unknown setting/]);
  rejects("model:\n  - {name: m}", [/parley\.yaml: model: unknown setting/]);
});

test("upstream URLs must be plain http(s) base URLs", () => {
  const pool = (url: string) => `models:\n  - {name: m, backend: upstream, upstreams: [{url: '${url}'}]}`;
  rejects(pool("not a url"), [/models\[0\]\.upstreams\[0\]\.url: is not a URL/]);
  rejects(pool("ftp://h/v1"), [/upstreams\[0\]\.url: must be an http/]);
  rejects(pool("http://user:pass@h/v1"), [/upstreams\[0\]\.url: must not carry credentials/]);
  rejects(pool("http://h/v1?key=abc"), [/upstreams\[0\]\.url: must not have a query/]);
  rejects(pool("http://h/v1#x"), [/upstreams\[0\]\.url: must not have a query or fragment/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{weight: 2}]}", [/upstreams\[0\]\.url: is required/]);
});

test("a credentialed URL is refused without echoing the password", () => {
  assert.throws(
    () => parseModelFile("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://admin:hunter2@h/v1'}]}", FILE, {}),
    (error: unknown) => error instanceof ConfigError && !error.message.includes("hunter2"),
  );
});

test("the same upstream twice is refused, however its URL is spelled", () => {
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h:8000/v1'}, {url: 'http://h:8000/v1'}]}", [/models\[0\]\.upstreams: lists http:\/\/h:8000\/v1 twice/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://H:8000/v1/'}, {url: 'http://h:8000/v1'}]}", [/twice/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h:80/v1'}, {url: 'http://h/v1'}]}", [/twice/]);
  // Different paths on one host are different servers.
  assert.equal(upstreamModel("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/a/v1'}, {url: 'http://h/b/v1'}]}").upstreams.length, 2);
});

test("an upstream pool needs a name and at least one server", () => {
  rejects("models:\n  - {backend: upstream, upstreams: [{url: 'http://h/v1'}]}", [/models\[0\]\.name: is required/]);
  rejects("models:\n  - {name: m, backend: upstream}", [/models\[0\]\.upstreams: must list at least one server/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: []}", [/at least one server/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: {url: 'http://h/v1'}}", [/models\[0\]\.upstreams: must be a list/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: ['http://h/v1']}", [/models\[0\]\.upstreams\[0\]: must be a mapping/]);
});

test("model names are unique across the file, and within a model repeats collapse", () => {
  rejects("models:\n  - {name: a, model: /a.gguf}\n  - {name: b, names: [a], backend: upstream, upstreams: [{url: 'http://h/v1'}]}", [/the model name 'a' is used twice/]);
  assert.deepEqual(localModel("models:\n  - {name: a, names: [a, ' b ']}").names, ["a", "b"]);
  rejects("models:\n  - {names: [a, '']}", [/models\[0\]\.names: must be a list of non-empty strings/]);
  rejects("models:\n  - {names: a}", [/models\[0\]\.names/]);
});

test("balancing must be a known policy", () => {
  rejects("models:\n  - {name: m, backend: upstream, balancing: round_robin, upstreams: [{url: 'http://h/v1'}]}", [/models\[0\]\.balancing: must be one of least_outstanding, prefix_affinity, weighted_round_robin/]);
  for (const policy of ["least_outstanding", "prefix_affinity", "weighted_round_robin"]) {
    assert.equal(upstreamModel(`models:\n  - {name: m, backend: upstream, balancing: ${policy}, upstreams: [{url: 'http://h/v1'}]}`).balancing, policy);
  }
});

test("numbers are checked for type and range, with the path and the value", () => {
  const pool = (extra: string) => `models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1'}], ${extra}}`;
  rejects(pool("retries: {max_attempts: 0}"), [/models\[0\]\.retries\.max_attempts: must be an integer between 1 and 10, got 0/]);
  rejects(pool("retries: {max_attempts: 2.5}"), [/max_attempts: must be an integer/]);
  rejects(pool("timeouts: {idle_ms: '100'}"), [/timeouts\.idle_ms: must be an integer.*got "100"/]);
  rejects(pool("prefix_affinity: {min_match: 1.5}"), [/prefix_affinity\.min_match: must be a number between 0 and 1/]);
  rejects(pool("prefix_affinity: {balance_rel: 0.5}"), [/balance_rel/]);
  rejects("models:\n  - {name: m, backend: upstream, upstreams: [{url: 'http://h/v1', weight: 0}]}", [/upstreams\[0\]\.weight: must be a number between 0.01 and 1000/]);
  rejects(pool("health: {path: health}"), [/models\[0\]\.health\.path: must start with '\/'/]);
  rejects(pool("timeouts: 5"), [/models\[0\]\.timeouts: must be a mapping/]);
  // Fractions where fractions make sense.
  assert.equal(upstreamModel(pool("retries: {budget_ratio: 0.05}")).retries.budgetRatio, 0.05);
  // 0 turns active checks off.
  assert.equal(upstreamModel(pool("health: {interval_ms: 0}")).health.intervalMs, 0);
});

test("a local model's relative path is relative to the config file, not the working directory", () => {
  assert.equal(localModel("models:\n  - {model: models/m.gguf}", "/srv/conf/parley.yaml").source, "/srv/conf/models/m.gguf");
  assert.equal(localModel("models:\n  - {model: ../m.gguf}", "/srv/conf/parley.yaml").source, "/srv/m.gguf");
  const relativeFile = path.join("conf", "parley.yaml");
  assert.equal(localModel("models:\n  - {model: m.gguf}", relativeFile).source, path.resolve("conf", "m.gguf"));
  // Absolute paths and URIs are kept as written.
  assert.equal(localModel("models:\n  - {model: /abs/m.gguf}", "/srv/conf/parley.yaml").source, "/abs/m.gguf");
  assert.equal(localModel("models:\n  - {model: 'hf:Qwen/Qwen2-0.5B-Instruct-GGUF:Q4_K_M'}", "/srv/conf/parley.yaml").source, "hf:Qwen/Qwen2-0.5B-Instruct-GGUF:Q4_K_M");
  assert.equal(localModel("models:\n  - {model: 'https://example.com/m.gguf'}", "/srv/conf/parley.yaml").source, "https://example.com/m.gguf");
});

test("a local model with nothing set: the default model, one at a time", () => {
  assert.deepEqual(localModel("models:\n  - {}"), {
    backend: "local",
    source: undefined,
    names: [],
    threads: undefined,
    contextSize: undefined,
    parallel: 1,
    queueSize: undefined,
    queueTimeoutMs: undefined,
  });
});

test("an unknown backend is refused", () => {
  rejects("models:\n  - {name: m, backend: remote}", [/models\[0\]\.backend: must be 'local' or 'upstream'/]);
});

test("an empty document, or one with an empty models list, has no models", () => {
  assert.deepEqual(parseModelFile("", FILE, {}), []);
  assert.deepEqual(parseModelFile("# only a comment\n", FILE, {}), []);
  assert.deepEqual(parseModelFile("models: []", FILE, {}), []);
  assert.deepEqual(parseModelFile("models:", FILE, {}), []);
});

test("a document that is not YAML, not a mapping, or whose models is not a list", () => {
  rejects("models: [unclosed", [/parley\.yaml: not valid YAML/]);
  rejects("models:\n  - {name: a}\nmodels: []", [/not valid YAML/]);
  rejects("- a\n- b", [/parley\.yaml: must be a mapping with a 'models' list/]);
  rejects("just text", [/must be a mapping/]);
  rejects("models: {name: a}", [/parley\.yaml: models: must be a list/]);
  rejects("models: [a]", [/models\[0\]: must be a mapping/]);
});

/**
 * Every failure path of an upstream pool, driven by a fault-injecting upstream on loopback
 * (test/helpers/fake-upstream.ts) behind a real gateway Parley: failover before the first
 * byte (5xx, 429, resets, stalls, malformed SSE, refused connections), no retry for a bad
 * request or after the first byte, timeouts, the circuit breaker, active health checks,
 * client disconnects cancelling the upstream request, redaction of upstream addresses and
 * credentials, and recorded transcripts of vLLM, SGLang, TGI, Ollama and llama-server
 * replayed byte-split to prove normalisation.
 */
import assert from "node:assert/strict";
import { after, afterEach, describe, test } from "node:test";
import { freePort } from "../../bench/lib/processes.js";
import { assertCompletionShape, assertUsage, chunksOf, expectError, streamedText, type Chunk, type Completion } from "../helpers/chat-assertions.js";
import { readManifest, startFakeUpstream, type Behaviour, type FakeUpstream, type FixtureExpectation } from "../helpers/fake-upstream.js";
import type { LedgerRow } from "../../src/access/types.js";
import { ADMIN_TOKEN, startGateway, type RunningGateway } from "../helpers/gateway.js";
import { postChat, readEvents } from "../helpers/parley.js";
import { until } from "../helpers/wait.js";

interface Pool {
  readonly gateway: RunningGateway;
  /** Tried first: weighted far above `good` under weighted round robin. */
  readonly bad: FakeUpstream;
  readonly good: FakeUpstream;
}

interface PoolView {
  upstreams: Array<{ url: string; state: string; requests: number; failures: number; last_error: string | null; retry_at: string | null }>;
}

const open: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (open.length > 0) await open.pop()?.();
});

/** Two fakes behind a gateway; `bad` answers with `behaviour` and is always tried first. */
async function pool(behaviour: Behaviour, settings: { timeouts?: string; health?: string; retries?: string } = {}): Promise<Pool> {
  const bad = await startFakeUpstream({ default: behaviour });
  const good = await startFakeUpstream();
  const yaml = [
    "models:",
    "  - name: pool",
    "    backend: upstream",
    "    upstream_model: served-upstream",
    "    balancing: weighted_round_robin",
    `    timeouts: ${settings.timeouts ?? "{ first_token_ms: 5000, idle_ms: 5000 }"}`,
    `    health: ${settings.health ?? "{ interval_ms: 0, failure_threshold: 100 }"}`,
    `    retries: ${settings.retries ?? "{ max_attempts: 3 }"}`,
    "    upstreams:",
    `      - { url: ${bad.url}, weight: 1000 }`,
    `      - { url: ${good.url}, weight: 1 }`,
  ].join("\n");
  const gateway = await startGateway(yaml);
  open.push(() => good.close(), () => bad.close(), () => gateway.close());
  return { gateway, bad, good };
}

const chats = (fake: FakeUpstream) => fake.requests.filter((request) => request.method === "POST");
const body = (overrides: Record<string, unknown> = {}) => ({ model: "pool", messages: [{ role: "user", content: "Hi" }], max_tokens: 16, ...overrides });

async function expectStreamed(gateway: RunningGateway, overrides: Record<string, unknown> = {}): Promise<Chunk[]> {
  const response = await postChat(gateway, body({ stream: true, ...overrides }));
  assert.equal(response.status, 200, await response.clone().text());
  return chunksOf(await readEvents(response)) as Chunk[];
}

describe("failover before the first byte", () => {
  const cases: Array<[string, Behaviour]> = [
    ["a 500", { kind: "status", status: 500, body: { object: "error", message: "CUDA out of memory", type: "InternalServerError", param: null, code: 500 } }],
    ["a 503", { kind: "status", status: 503, body: "Service Unavailable" }],
    ["a reset before the headers", { kind: "reset-before-headers" }],
    ["a stream reset before any text", { kind: "reset-after", chunks: 0 }],
    ["malformed SSE", { kind: "malformed-sse" }],
  ];
  for (const [name, behaviour] of cases) {
    test(`${name}: the request is answered by the other upstream, streamed and not`, async () => {
      const { gateway, bad, good } = await pool(behaviour);
      const chunks = await expectStreamed(gateway);
      assert.equal(streamedText(chunks), "Hello! How can I help?");
      assert.ok(!JSON.stringify(chunks).includes('"error"'), "no error reached the client");
      const response = await postChat(gateway, body());
      const completion = (await response.json()) as Completion;
      assertCompletionShape(completion, "pool");
      assert.equal(completion.choices[0]?.message.content, "Hello! How can I help?");
      assert.equal(chats(bad).length, 2, "each request tried the faulty upstream first");
      assert.equal(chats(good).length, 2, "then the healthy one");
    });
  }

  test("a 429 with a short Retry-After: the other upstream, and no traffic to the busy one until the time is up", async () => {
    const { gateway, bad, good } = await pool({ kind: "status", status: 429, body: { error: { message: "busy" } }, headers: { "retry-after": "1" } });
    assert.equal(streamedText(await expectStreamed(gateway)), "Hello! How can I help?");
    assert.equal(streamedText(await expectStreamed(gateway)), "Hello! How can I help?");
    assert.equal(chats(bad).length, 1, "the busy upstream was left alone for its Retry-After");
    assert.equal(chats(good).length, 2);
    const view = (await gateway.admin<{ data: PoolView[] }>("/admin/v1/upstreams")).data[0]!.upstreams[0]!;
    assert.equal(view.state, "closed", "a 429 is not a health failure");
  });

  test("a stall before the first token: first_token_ms, then the other upstream", async () => {
    const { gateway, bad, good } = await pool({ kind: "stall-before-headers" }, { timeouts: "{ first_token_ms: 300 }" });
    const chunks = await expectStreamed(gateway);
    assert.equal(streamedText(chunks), "Hello! How can I help?");
    await until(() => chats(bad)[0]?.closedAt !== undefined, "the stalled upstream request to be cancelled");
    assert.equal(chats(good).length, 1);
  });

  test("a refused connection: the other upstream", async () => {
    const port = await freePort();
    const good = await startFakeUpstream();
    const gateway = await startGateway(
      ["models:", "  - name: pool", "    backend: upstream", "    balancing: weighted_round_robin", "    health: { interval_ms: 0 }", "    upstreams:", `      - { url: "http://127.0.0.1:${port}/v1", weight: 1000 }`, `      - { url: ${good.url} }`].join("\n"),
    );
    open.push(() => good.close(), () => gateway.close());
    assert.equal(streamedText(await expectStreamed(gateway)), "Hello! How can I help?");
  });

  test("the request upstream carries the pool's model name, the parameters, include_usage and the request id", async () => {
    const { gateway, bad } = await pool({ kind: "ok" });
    const response = await postChat(gateway, body({ stream: true, temperature: 0.5, top_p: 0.9, stop: ["\n\n"], seed: 7, presence_penalty: 0.1, frequency_penalty: 0.2 }), {
      headers: { "x-request-id": "trace-me-0123" },
    });
    assert.equal(response.status, 200);
    await response.text();
    assert.equal(chats(bad)[0]?.headers["x-request-id"], "trace-me-0123", "the request id follows the request upstream");
    assert.deepEqual(chats(bad)[0]?.body, {
      model: "served-upstream",
      messages: [{ role: "user", content: "Hi" }],
      temperature: 0.5,
      top_p: 0.9,
      max_tokens: 16,
      presence_penalty: 0.1,
      frequency_penalty: 0.2,
      stream: true,
      stop: ["\n\n"],
      seed: 7,
      stream_options: { include_usage: true },
    });
  });
});

describe("what is not retried", () => {
  test("a request the upstream calls too long: 400 context_length_exceeded, the other upstream untried", async () => {
    const { gateway, good } = await pool({
      kind: "status",
      status: 400,
      body: { object: "error", message: "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.", type: "BadRequestError", param: null, code: 400 },
    });
    await expectError(await postChat(gateway, body()), { status: 400, code: "context_length_exceeded", param: "messages" });
    assert.equal(chats(good).length, 0);
  });

  test("a validation error (TGI's 422): 400 upstream_bad_request with the upstream's reason", async () => {
    const { gateway, good } = await pool({ kind: "status", status: 422, body: { error: "Input validation error: `top_p` must be > 0.0 and < 1.0", error_type: "validation" } });
    const error = await expectError(await postChat(gateway, body()), { status: 400, code: "upstream_bad_request" });
    assert.match(error.error.message, /top_p/);
    assert.equal(chats(good).length, 0);
  });

  test("429 with a long Retry-After everywhere: 503 server_overloaded carrying the upstream's Retry-After", async () => {
    const { gateway, good } = await pool({ kind: "status", status: 429, body: { error: { message: "slow down" } }, headers: { "retry-after": "60" } });
    good.setDefault({ kind: "status", status: 429, body: { error: { message: "slow down" } }, headers: { "retry-after": "60" } });
    const response = await postChat(gateway, body());
    assert.equal(response.headers.get("retry-after"), "60");
    await expectError(response, { status: 503, code: "server_overloaded" });
    assert.equal(chats(good).length, 0, "a long Retry-After is not retried elsewhere");
  });

  test("every upstream paused by a short 429: the next request gets 503 server_overloaded at once, then they are back", async () => {
    const busy: Behaviour = { kind: "status", status: 429, body: { error: { message: "slow down" } }, headers: { "retry-after": "1" } };
    const { gateway, bad, good } = await pool(busy);
    good.next(busy);
    await expectError(await postChat(gateway, body()), { status: 503, code: "server_overloaded" });
    const paused = await postChat(gateway, body());
    assert.equal(paused.headers.get("retry-after"), "1");
    const error = await expectError(paused, { status: 503, code: "server_overloaded" });
    assert.match(error.error.message, /429/);
    assert.equal(chats(bad).length + chats(good).length, 2, "no upstream was asked while both were paused");
    bad.setDefault({ kind: "ok" });
    await until(async () => (await postChat(gateway, body())).status === 200, "the pause to end");
  });

  test("every upstream failing: 502 upstream_error, with no upstream address or credential in the message", async () => {
    const leak = { object: "error", message: "backend http://10.9.8.7:8000/generate failed for Bearer sk-topsecret at 10.9.8.7:8000 and [fe80::1]:9000", type: "InternalServerError", code: 500 };
    const { gateway, good } = await pool({ kind: "status", status: 500, body: leak });
    good.setDefault({ kind: "status", status: 500, body: leak });
    const error = await expectError(await postChat(gateway, body()), { status: 502, code: "upstream_error" });
    for (const secret of ["10.9.8.7", "sk-topsecret", "fe80", "http://", "127.0.0.1", String(new URL(good.url).port)]) {
      assert.ok(!error.error.message.includes(secret), `'${secret}' leaked: ${error.error.message}`);
    }
  });

  test("every upstream stalling: 504 upstream_timeout", async () => {
    const { gateway, good } = await pool({ kind: "stall-before-headers" }, { timeouts: "{ first_token_ms: 200 }" });
    good.setDefault({ kind: "stall-before-headers" });
    await expectError(await postChat(gateway, body({ stream: true })), { status: 504, code: "upstream_timeout" });
  });

  test("a non-streamed request that runs past total_ms: 504", async () => {
    const { gateway, good } = await pool({ kind: "stall-after", chunks: 0 }, { timeouts: "{ total_ms: 300 }" });
    good.setDefault({ kind: "stall-after", chunks: 0 });
    await expectError(await postChat(gateway, body()), { status: 504, code: "upstream_timeout" });
  });
});

describe("after the first byte", () => {
  test("a reset mid-stream: the text so far, then an upstream_error event and [DONE]; never retried", async () => {
    const { gateway, good } = await pool({ kind: "reset-after", chunks: 2 });
    const chunks = await expectStreamed(gateway);
    const error = chunks.at(-1) as unknown as { error: { code: string } };
    assert.equal(error.error.code, "upstream_error");
    assert.ok(streamedText(chunks.slice(0, -1)).length > 0, "the text that came first was relayed");
    assert.equal(chats(good).length, 0);
  });

  test("a stall mid-stream: idle_ms, then an upstream_timeout event and [DONE]", async () => {
    const { gateway, bad } = await pool({ kind: "stall-after", chunks: 2 }, { timeouts: "{ idle_ms: 300 }" });
    const chunks = await expectStreamed(gateway);
    assert.equal((chunks.at(-1) as unknown as { error: { code: string } }).error.code, "upstream_timeout");
    await until(() => chats(bad)[0]?.closedAt !== undefined, "the stalled upstream request to be closed");
  });

  test("a client that disconnects cancels its upstream request at once", async () => {
    const { gateway, bad } = await pool({ kind: "ok", text: "word ".repeat(200), tokenDelayMs: 50 });
    const controller = new AbortController();
    const response = await postChat(gateway, body({ stream: true, max_tokens: 1000 }), { signal: controller.signal });
    const reader = response.body!.getReader();
    await reader.read();
    controller.abort();
    await until(() => chats(bad)[0]?.closedAt !== undefined, "the upstream connection to close");
    assert.equal(chats(bad)[0]?.finishedAt, undefined, "the upstream was cut off, not left to finish");
  });
});

describe("the usage ledger", () => {
  test("every upstream request leaves its row: completed with the upstream's counts, failed, cut mid-stream, abandoned", async () => {
    const { gateway, bad, good } = await pool({ kind: "ok" });
    const created = await fetch(`${gateway.url}/admin/v1/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "ledger test" }),
    });
    const { secret } = (await created.json()) as { secret: string };
    const send = (id: string, overrides: Record<string, unknown> = {}, signal?: AbortSignal) =>
      postChat(gateway, body(overrides), { apiKey: secret, headers: { "x-request-id": id }, ...(signal === undefined ? {} : { signal }) });

    await (await send("ledger-completed")).text();
    bad.next({ kind: "status", status: 500, body: "boom" });
    good.next({ kind: "status", status: 500, body: "boom" });
    await (await send("ledger-failed")).text();
    bad.next({ kind: "reset-after", chunks: 2 });
    await (await send("ledger-cut", { stream: true })).text();
    bad.next({ kind: "ok", text: "word ".repeat(100), tokenDelayMs: 50 });
    const controller = new AbortController();
    const abandoned = await send("ledger-abandoned", { stream: true, max_tokens: 500 }, controller.signal);
    await abandoned.body!.getReader().read();
    controller.abort();

    const rows = new Map<string, LedgerRow>();
    await until(async () => {
      for (const row of await gateway.access.store.recentRequests(20)) rows.set(row.requestId, row);
      return rows.size >= 4;
    }, "four ledger rows");
    const completed = rows.get("ledger-completed");
    assert.equal(completed?.outcome, "completed");
    assert.equal(completed?.model, "pool");
    assert.ok((completed?.completionTokens ?? 0) > 0 && (completed?.promptTokens ?? 0) > 0, "the upstream's counts");
    assert.equal(rows.get("ledger-failed")?.outcome, "failed");
    assert.equal(rows.get("ledger-failed")?.status, 502);
    assert.equal(rows.get("ledger-cut")?.outcome, "failed");
    assert.equal(rows.get("ledger-cut")?.status, 200);
    assert.ok((rows.get("ledger-cut")?.completionTokens ?? 0) >= 2, "the tokens streamed before the cut");
    assert.equal(rows.get("ledger-abandoned")?.outcome, "abandoned");
  });
});

describe("health", () => {
  test("repeated failures eject an upstream; it gets no traffic until its backoff ends, then one trial puts it back", async () => {
    const { gateway, bad, good } = await pool(
      { kind: "status", status: 500, body: "boom" },
      { health: "{ interval_ms: 0, failure_threshold: 2, backoff_ms: 400 }" },
    );
    for (let index = 0; index < 4; index++) assertCompletionShape((await (await postChat(gateway, body())).json()) as Completion, "pool");
    assert.equal(chats(bad).length, 2, "ejected after two failures");
    assert.equal(chats(good).length, 4);
    const ejected = await gateway.admin<{ data: PoolView[] }>("/admin/v1/upstreams");
    const view = ejected.data[0]!.upstreams[0]!;
    assert.equal(view.state, "open");
    assert.ok(view.retry_at !== null);
    assert.match(view.last_error ?? "", /HTTP 500/);
    const metrics = await (await fetch(`${gateway.url}/metrics`)).text();
    assert.match(metrics, /parley_upstream_state\{model="pool",upstream="0",state="open"\} 1/);
    assert.match(metrics, /parley_upstream_failures\{model="pool",upstream="0"\} 2/);
    assert.match(metrics, /parley_upstream_attempts\{model="pool",upstream="1"\} 4/);
    assert.ok(!metrics.includes("127.0.0.1"), "/metrics needs no auth, so it names upstreams by position only");

    bad.setDefault({ kind: "ok" });
    await until(async () => (await gateway.admin<{ data: PoolView[] }>("/admin/v1/upstreams")).data[0]!.upstreams[0]!.state === "half_open", "the backoff to end");
    await postChat(gateway, body()).then((response) => response.text());
    assert.equal(chats(bad).length, 3, "the trial went to the recovered upstream");
    assert.equal((await gateway.admin<{ data: PoolView[] }>("/admin/v1/upstreams")).data[0]!.upstreams[0]!.state, "closed");
  });

  test("every upstream ejected: 503 model_unavailable with Retry-After, and /health says so", async () => {
    const { gateway, good } = await pool({ kind: "status", status: 500, body: "boom" }, { health: "{ interval_ms: 0, failure_threshold: 1, backoff_ms: 30000 }" });
    good.setDefault({ kind: "status", status: 500, body: "boom" });
    await expectError(await postChat(gateway, body()), { status: 502, code: "upstream_error" });
    const response = await postChat(gateway, body());
    assert.ok(Number(response.headers.get("retry-after")) >= 1);
    await expectError(response, { status: 503, code: "model_unavailable", type: "server_error" });
    const health = await fetch(`${gateway.url}/health`);
    assert.equal(health.status, 503);
    assert.deepEqual(((await health.json()) as { models: unknown }).models, { pool: "failed" });
  });

  test("active checks eject an upstream that refuses Parley's credentials, and the key never leaks", async () => {
    const locked = await startFakeUpstream({ apiKey: "right-key-123" });
    const gateway = await startGateway(
      ["models:", "  - name: pool", "    backend: upstream", "    health: { interval_ms: 50, failure_threshold: 2, backoff_ms: 60000 }", "    upstreams:", `      - { url: ${locked.url}, api_key: "wrong-key-456" }`].join("\n"),
    );
    open.push(() => locked.close(), () => gateway.close());
    await until(async () => (await gateway.admin<{ data: PoolView[] }>("/admin/v1/upstreams")).data[0]!.upstreams[0]!.state === "open", "the failing checks to eject it");
    assert.equal(locked.requests[0]?.headers.authorization, "Bearer wrong-key-456", "the pool's key is what is sent");
    const error = await expectError(await postChat(gateway, body()), { status: 503, code: "model_unavailable", type: "server_error" });
    assert.ok(!JSON.stringify(error).includes("wrong-key-456"));
    assert.ok(!JSON.stringify(await gateway.admin("/admin/v1/upstreams")).includes("wrong-key-456"));
  });
});

describe("recorded transcripts of real servers, replayed split every 3 bytes", async () => {
  const upstream = await startFakeUpstream();
  const gateway = await startGateway(["models:", "  - name: pool", "    backend: upstream", "    health: { interval_ms: 0 }", "    upstreams:", `      - url: ${upstream.url}`].join("\n"));
  after(async () => {
    await gateway.close();
    await upstream.close();
  });

  test("an upstream that ignores stream: true and sends one JSON body is still streamed to the client", async () => {
    const fixture = (await readManifest()).find((entry) => entry.file === "vllm.json");
    upstream.next({ kind: "replay", file: "vllm.json" });
    const chunks = await expectStreamed(gateway, { stream_options: { include_usage: true } });
    assert.equal(streamedText(chunks), (fixture?.expect as FixtureExpectation).content);
    assert.equal((chunks.at(-1) as unknown as { usage: { completion_tokens: number } }).usage.completion_tokens, (fixture?.expect as FixtureExpectation).completionTokens);
  });

  for (const fixture of await readManifest()) {
    test(`${fixture.file} (${fixture.server})`, async () => {
      upstream.next({ kind: "replay", file: fixture.file, splitEvery: 3 });
      if (fixture.kind === "error") {
        const said = (fixture.expect as { upstreamMessage: string }).upstreamMessage;
        const rejected = [400, 413, 422].includes(fixture.status);
        // Every recorded 400/422 is a prompt too long for the model, each server wording it its own way.
        const error = await expectError(await postChat(gateway, body()), { status: rejected ? 400 : 502, code: rejected ? "context_length_exceeded" : "upstream_error" });
        if (rejected) assert.ok(error.error.message.includes(said.slice(0, 20)), `the upstream's reason is passed on: ${error.error.message}`);
        return;
      }
      const expected = fixture.expect as FixtureExpectation;
      const stop = typeof expected.stopReason === "string" ? { stop: [expected.stopReason] } : {};
      let content: string;
      let finishReason: string | null | undefined;
      let stopReason: string | null | undefined;
      let usage: Completion["usage"] | undefined;
      if (fixture.kind === "stream") {
        const chunks = await expectStreamed(gateway, { stream_options: { include_usage: true }, ...stop });
        content = streamedText(chunks);
        for (const chunk of chunks) {
          assert.match(chunk.id, /^cmpl-[0-9a-f]{32}$/, "Parley's id, not the upstream's");
          assert.equal(chunk.model, "pool");
          assert.ok(!("system_fingerprint" in chunk) && !("timings" in chunk));
        }
        const finish = chunks.at(-2)?.choices[0];
        finishReason = finish?.finish_reason;
        stopReason = (finish as { stop_reason?: string | null } | undefined)?.stop_reason;
        usage = (chunks.at(-1) as unknown as { usage: Completion["usage"] }).usage;
      } else {
        const response = await postChat(gateway, body(stop));
        const completion = (await response.json()) as Completion;
        assertCompletionShape(completion, "pool");
        content = completion.choices[0]?.message.content ?? "";
        finishReason = completion.choices[0]?.finish_reason;
        stopReason = completion.choices[0]?.stop_reason;
        usage = completion.usage;
      }
      assert.equal(content, expected.content);
      assert.equal(finishReason, expected.finishReason);
      assert.equal(stopReason, typeof expected.stopReason === "string" ? expected.stopReason : null);
      assertUsage(usage);
      if (expected.promptTokens !== null) assert.equal(usage.prompt_tokens, expected.promptTokens);
      if (expected.completionTokens !== null) assert.equal(usage.completion_tokens, expected.completionTokens);
      if (expected.cachedTokens !== null) assert.equal(usage.prompt_tokens_details?.cached_tokens, expected.cachedTokens);
    });
  }
});

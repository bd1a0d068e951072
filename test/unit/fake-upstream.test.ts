/**
 * The fake upstream itself (each behaviour observable with plain fetch) and the recorded
 * upstream transcripts it replays: every manifest entry exists, parses, and says what it holds.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  readManifest,
  startFakeUpstream,
  UPSTREAM_FIXTURES_DIR,
  type FakeUpstream,
  type FixtureExpectation,
} from "../helpers/fake-upstream.js";
import { until } from "../helpers/wait.js";

const CHAT = { model: "m", messages: [{ role: "user", content: "Hi" }] };

function post(fake: FakeUpstream, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${fake.url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    ...init,
  });
}

/** The JSON payloads of the `data:` lines of an SSE body, `[DONE]` left out (the space after the colon is optional). */
function dataPayloads(text: string): string[] {
  return text
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice("data:".length).replace(/^ /, ""))
    .filter((payload) => payload !== "[DONE]");
}

/** Reads until `count` SSE events arrived; fails if the stream ends first. */
async function readEvents(reader: ReadableStreamDefaultReader<Uint8Array>, count: number): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  while (text.split("\n\n").length - 1 < count) {
    const { done, value } = await reader.read();
    if (done) assert.fail(`stream ended after ${text.split("\n\n").length - 1} events`);
    text += decoder.decode(value, { stream: true });
  }
  return text;
}

describe("fake upstream", () => {
  let fake: FakeUpstream;
  before(async () => {
    fake = await startFakeUpstream();
  });
  after(() => fake.close());

  test("answers health checks and lists a model", async () => {
    const health = await fetch(fake.url.replace(/\/v1$/, "/health"));
    assert.equal(health.status, 200);
    const models = await fetch(`${fake.url}/models`);
    assert.equal(models.status, 200);
    const list = (await models.json()) as { object: string; data: Array<{ id: string }> };
    assert.equal(list.object, "list");
    assert.equal(list.data[0]?.id, "fake-model");
  });

  test("ok without stream: one JSON completion with usage", async () => {
    const response = await post(fake, CHAT);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    const body = (await response.json()) as {
      id: string;
      model: string;
      choices: Array<{ message: { content: string }; finish_reason: string }>;
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    };
    assert.match(body.id, /^chatcmpl-fake/);
    assert.equal(body.model, "m");
    assert.equal(body.choices[0]?.message.content, "Hello! How can I help?");
    assert.equal(body.choices[0]?.finish_reason, "stop");
    assert.equal(body.usage.total_tokens, body.usage.prompt_tokens + body.usage.completion_tokens);
    const recorded = fake.requests.at(-1);
    assert.equal(recorded?.path, "/v1/chat/completions");
    assert.deepEqual(recorded?.body, CHAT);
    assert.equal(recorded?.headers["content-type"], "application/json");
  });

  test("ok with stream: chunks, a usage chunk only when asked, then [DONE]", async () => {
    fake.next({ kind: "ok", text: "One two three" });
    const withUsage = await (await post(fake, { ...CHAT, stream: true, stream_options: { include_usage: true } })).text();
    const chunks = dataPayloads(withUsage).map((payload) => JSON.parse(payload) as {
      choices: Array<{ delta: { content?: string }; finish_reason: string | null }>;
      usage?: { completion_tokens: number };
    });
    assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? "").join(""), "One two three");
    assert.deepEqual(chunks.at(-1)?.choices, []);
    assert.equal(chunks.at(-1)?.usage?.completion_tokens, 3);
    assert.equal(chunks.at(-2)?.choices[0]?.finish_reason, "stop");
    assert.ok(withUsage.endsWith("data: [DONE]\n\n"));

    const without = await (await post(fake, { ...CHAT, stream: true })).text();
    assert.ok(!without.includes('"usage"'));
    assert.ok(without.endsWith("data: [DONE]\n\n"));
  });

  test("ok honours max_tokens with a length finish", async () => {
    const response = await post(fake, { ...CHAT, max_tokens: 2 });
    const body = (await response.json()) as { choices: Array<{ message: { content: string }; finish_reason: string }> };
    assert.equal(body.choices[0]?.message.content, "Hello! How");
    assert.equal(body.choices[0]?.finish_reason, "length");
  });

  test("status: any status, body and headers", async () => {
    const error = { object: "error", message: "busy", type: "ServiceUnavailableError", param: null, code: 503 };
    fake.next({ kind: "status", status: 429, body: error, headers: { "retry-after": "2" } });
    const response = await post(fake, CHAT);
    assert.equal(response.status, 429);
    assert.equal(response.headers.get("retry-after"), "2");
    assert.deepEqual(await response.json(), error);
  });

  test("queued behaviours are used in order, then the default", async () => {
    fake.next({ kind: "status", status: 500, body: "one" }, { kind: "status", status: 502, body: "two" });
    assert.equal((await post(fake, CHAT)).status, 500);
    const second = await post(fake, CHAT);
    assert.equal(second.status, 502);
    assert.equal(await second.text(), "two");
    assert.equal((await post(fake, CHAT)).status, 200);
    fake.setDefault({ kind: "status", status: 503, body: "down" });
    assert.equal((await post(fake, CHAT)).status, 503);
    fake.setDefault({ kind: "ok" });
  });

  test("stall-before-headers: no answer, and the client's disconnect is recorded at once", async () => {
    fake.next({ kind: "stall-before-headers" });
    const controller = new AbortController();
    const pending = post(fake, CHAT, { signal: controller.signal });
    const count = fake.requests.length;
    await until(() => fake.requests.length > count, "the stalled request to arrive");
    const recorded = fake.requests.at(-1);
    assert.equal(recorded?.closedAt, undefined);
    const abortedAt = Date.now();
    controller.abort();
    await assert.rejects(pending, { name: "AbortError" });
    await until(() => recorded?.closedAt !== undefined, "the upstream connection to close");
    assert.ok((recorded?.closedAt ?? Infinity) - abortedAt < 1000);
    assert.equal(recorded?.finishedAt, undefined);
  });

  test("stall-after: N content chunks, then silence", async () => {
    fake.next({ kind: "stall-after", chunks: 2 });
    const controller = new AbortController();
    const response = await post(fake, { ...CHAT, stream: true }, { signal: controller.signal });
    assert.equal(response.status, 200);
    const reader = response.body!.getReader();
    const text = await readEvents(reader, 3); // the role chunk and two content chunks
    assert.equal(dataPayloads(text).length, 3);
    const more = await Promise.race([reader.read().then(() => "data"), new Promise((resolve) => setTimeout(resolve, 150, "silence"))]);
    assert.equal(more, "silence");
    controller.abort();
    const recorded = fake.requests.at(-1);
    await until(() => recorded?.closedAt !== undefined, "the upstream connection to close");
  });

  test("reset-before-headers: the request fails without a response", async () => {
    fake.next({ kind: "reset-before-headers" });
    await assert.rejects(post(fake, CHAT), TypeError);
  });

  test("reset-after: N chunks arrive, then the body errors", async () => {
    fake.next({ kind: "reset-after", chunks: 2 });
    const response = await post(fake, { ...CHAT, stream: true });
    assert.equal(response.status, 200);
    const reader = response.body!.getReader();
    const text = await readEvents(reader, 3);
    assert.ok(text.includes('"content":"Hello!"'));
    await assert.rejects(async () => {
      for (;;) {
        const { done } = await reader.read();
        if (done) break;
      }
    });
  });

  test("malformed-sse: a valid chunk, then data lines that are not JSON", async () => {
    fake.next({ kind: "malformed-sse" });
    const response = await post(fake, { ...CHAT, stream: true });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    const payloads = dataPayloads(await response.text());
    assert.doesNotThrow(() => JSON.parse(payloads[0] ?? ""));
    assert.ok(payloads.slice(1).some((payload) => {
      try {
        JSON.parse(payload);
        return false;
      } catch {
        return true;
      }
    }));
  });

  test("replay: a transcript's exact bytes, status and type from the manifest", async () => {
    const expected = await readFile(path.join(UPSTREAM_FIXTURES_DIR, "tgi.error.json"));
    fake.next({ kind: "replay", file: "tgi.error.json" });
    const response = await post(fake, CHAT);
    assert.equal(response.status, 422);
    assert.equal(response.headers.get("content-type"), "application/json");
    assert.deepEqual(Buffer.from(await response.arrayBuffer()), expected);
  });

  test("replay with splitEvery: pieces arrive split inside lines and UTF-8 characters", async () => {
    const expected = await readFile(path.join(UPSTREAM_FIXTURES_DIR, "llamacpp.stream-utf8.sse"));
    fake.next({ kind: "replay", file: "llamacpp.stream-utf8.sse", splitEvery: 3 });
    const response = await post(fake, { ...CHAT, stream: true });
    assert.equal(response.headers.get("content-type"), "text/event-stream");
    const reader = response.body!.getReader();
    const pieces: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      pieces.push(value);
    }
    assert.deepEqual(Buffer.concat(pieces), expected);
    assert.ok(pieces.length > 1, "the body should arrive in more than one piece");
  });

  test("many keep-alive requests on one connection leak no listeners", async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning);
    process.on("warning", onWarning);
    try {
      for (let index = 0; index < 15; index += 1) await (await fetch(`${fake.url}/models`)).arrayBuffer();
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off("warning", onWarning);
    }
    assert.deepEqual(warnings.map((warning) => warning.name), []);
  });

  test("close() returns while requests are stalled", async () => {
    const other = await startFakeUpstream({ default: { kind: "stall-before-headers" } });
    const pending = post(other, CHAT).catch((error: unknown) => error);
    await until(() => other.requests.length === 1, "the stalled request to arrive");
    await other.close();
    await other.close();
    assert.ok((await pending) instanceof TypeError);
    assert.notEqual(other.requests[0]?.closedAt, undefined);
  });

  test("close() returns while a long delay is pending", async () => {
    const other = await startFakeUpstream({ default: { kind: "ok", delayMs: 60_000 } });
    const pending = post(other, CHAT).catch((error: unknown) => error);
    await until(() => other.requests.length === 1, "the delayed request to arrive");
    const started = Date.now();
    await other.close();
    assert.ok(Date.now() - started < 1000);
    assert.ok((await pending) instanceof TypeError);
  });
});

describe("fake upstream with an API key", () => {
  let fake: FakeUpstream;
  before(async () => {
    fake = await startFakeUpstream({ apiKey: "sk-upstream" });
  });
  after(() => fake.close());

  for (const [method, route] of [["GET", "/health"], ["GET", "/v1/models"], ["POST", "/v1/chat/completions"]] as const) {
    test(`${method} ${route} needs the bearer`, async () => {
      const url = fake.url.replace(/\/v1$/, "") + route;
      const body = method === "POST" ? JSON.stringify(CHAT) : undefined;
      const bare = await fetch(url, { method, ...(body === undefined ? {} : { body }) });
      assert.equal(bare.status, 401);
      const wrong = await fetch(url, { method, headers: { authorization: "Bearer nope" }, ...(body === undefined ? {} : { body }) });
      assert.equal(wrong.status, 401);
      const right = await fetch(url, { method, headers: { authorization: "Bearer sk-upstream" }, ...(body === undefined ? {} : { body }) });
      assert.equal(right.status, 200);
      await right.arrayBuffer();
    });
  }
});

describe("recorded upstream transcripts", async () => {
  const entries = await readManifest();

  test("the manifest covers every server and every fixture file", async () => {
    const servers = new Set(entries.map((entry) => entry.server));
    assert.deepEqual([...servers].sort(), ["llamacpp", "ollama", "sglang", "tgi", "vllm"]);
    for (const server of servers) {
      for (const kind of ["stream", "json", "error"] as const) {
        assert.ok(entries.some((entry) => entry.server === server && entry.kind === kind), `${server} has no ${kind} transcript`);
      }
    }
    const { readdir } = await import("node:fs/promises");
    const files = (await readdir(UPSTREAM_FIXTURES_DIR)).filter((name) => name.endsWith(".sse") || name.endsWith(".json"));
    assert.deepEqual(files.filter((name) => name !== "manifest.json").sort(), entries.map((entry) => entry.file).sort());
  });

  for (const entry of entries) {
    test(`${entry.file} parses and holds what the manifest says`, async () => {
      const text = await readFile(path.join(UPSTREAM_FIXTURES_DIR, entry.file), "utf8");
      assert.ok(!text.includes("\r"), "LF line endings only");
      if (entry.kind === "error") {
        assert.ok(entry.status >= 400);
        assert.ok("upstreamMessage" in entry.expect);
        assert.ok(text.includes(JSON.stringify(entry.expect.upstreamMessage).slice(1, -1)));
        JSON.parse(text);
        return;
      }
      assert.equal(entry.status, 200);
      assert.ok("content" in entry.expect);
      const expect: FixtureExpectation = entry.expect;
      // Token counts the manifest promises are in the transcript, and absent ones are absent.
      for (const [field, value] of [
        ["prompt_tokens", expect.promptTokens],
        ["completion_tokens", expect.completionTokens],
        ["cached_tokens", expect.cachedTokens],
      ] as const) {
        if (value === null) assert.ok(!text.includes(`"${field}":`), `${field} should be absent`);
        else assert.ok(text.includes(`"${field}":${value}`), `${field} should be ${value}`);
      }
      if (entry.kind === "json") {
        const body = JSON.parse(text) as { choices: Array<{ message: { content: string } }> };
        assert.equal(body.choices[0]?.message.content, expect.content);
        return;
      }
      assert.ok(text.endsWith("\n\n"), "every event ends with a blank line");
      for (const line of text.split("\n")) {
        assert.ok(line === "" || line.startsWith("data:"), `unexpected line: ${line}`);
      }
      const chunks = dataPayloads(text).map((payload) => JSON.parse(payload) as {
        choices: Array<{ delta: { content?: string | null } }>;
      });
      const streamed = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("");
      assert.equal(streamed, expect.content);
    });
  }
});

/**
 * The engine's limits (DESIGN §2 stages 5–6): the context window, a client that goes
 * away mid-stream, and the bounded queue in front of the engine's sequences.
 *
 * Nothing here asserts how fast anything is: waits poll `backend.activity()` under a
 * generous deadline that only turns a hang into a failure.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chatBody, expectError, expectServes, type Chunk, type Completion } from "../helpers/chat-assertions.js";
import { STORIES_260K, tinyQwen2 } from "../helpers/models.js";
import { postChat, startParley, type RunningParley } from "../helpers/parley.js";
import { until } from "../helpers/wait.js";



/** A stream opened and read until its first text: proof that generation is running. */
interface OpenStream {
  readonly controller: AbortController;
  /** Content received so far. */
  readonly text: () => string;
  /** Disconnects: aborts the fetch and drops the connection. */
  abort(): Promise<void>;
}

async function openStream(parley: RunningParley, body: Record<string, unknown>): Promise<OpenStream> {
  const controller = new AbortController();
  const response = await postChat(parley, { ...body, stream: true }, { signal: controller.signal });
  assert.equal(response.status, 200);
  assert.ok(response.body !== null);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let text = "";
  while (text.length === 0) {
    const { value, done } = await reader.read();
    assert.ok(done !== true, "the stream ended before any text");
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split("\n\n");
    buffer = events.pop() ?? "";
    for (const event of events) {
      const data = event.replace(/^data: /, "");
      if (data !== "[DONE]") text += (JSON.parse(data) as Chunk).choices[0]?.delta.content ?? "";
    }
  }
  return {
    controller,
    text: () => text,
    abort: async () => {
      controller.abort();
      await reader.cancel().catch(() => undefined);
    },
  };
}

/** A request that the engine would take a long while to finish. */
const LONG = { model: "test-model", messages: [{ role: "user", content: "Write a very long story." }], max_tokens: 4096 };

describe("the context window", () => {
  let parley: RunningParley;
  let promptTokens: number;
  const CONTEXT = 256;

  before(async () => {
    parley = await startParley({ modelPath: STORIES_260K, contextSize: CONTEXT });
    const probe = (await (await postChat(parley, chatBody({ max_tokens: 1 }))).json()) as Completion;
    promptTokens = probe.usage.prompt_tokens;
    assert.ok(promptTokens > 0 && promptTokens < 64);
  });
  after(async () => {
    await parley?.close();
  });

  test("prompt + max_tokens exactly filling the window is served", async () => {
    const response = await postChat(parley, chatBody({ max_tokens: CONTEXT - promptTokens }));
    assert.equal(response.status, 200, await response.text());
  });

  test("one token beyond the window: 400 context_length_exceeded on 'messages', streaming or not, before any stream byte", async () => {
    for (const stream of [false, true]) {
      const response = await postChat(parley, chatBody({ max_tokens: CONTEXT - promptTokens + 1, stream }));
      assert.doesNotMatch(response.headers.get("content-type") ?? "", /event-stream/, "no stream was started");
      const { error } = await expectError(response, { status: 400, code: "context_length_exceeded", param: "messages" });
      assert.match(error.message, new RegExp(String(CONTEXT)), "says how large the window is");
    }
    await expectServes(parley);
  });

  test("max_tokens within its range but beyond the window, and a prompt longer than the window", async () => {
    const tooLong = [
      chatBody({ max_tokens: 300 }),
      chatBody({ max_tokens: 4096 }),
      chatBody({ max_tokens: 1, messages: [{ role: "user", content: "Once upon a time there was a cat. ".repeat(60) }] }),
    ];
    for (const body of tooLong) {
      for (const stream of [false, true]) {
        const response = await postChat(parley, { ...body, stream });
        assert.doesNotMatch(response.headers.get("content-type") ?? "", /event-stream/);
        await expectError(response, { status: 400, code: "context_length_exceeded", param: "messages" });
      }
    }
    await expectServes(parley);
  });
});

describe("a client that disconnects", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: await tinyQwen2(), contextSize: 8192, parallel: 1 });
  });
  after(async () => {
    await parley?.close();
  });

  test("mid-stream: the engine's slot is freed and the next request is served", async () => {
    const before = parley.backend.generatedTokens;
    const stream = await openStream(parley, LONG);
    assert.ok(stream.text().length > 0);
    assert.equal(parley.backend.activity().running, 1);
    await stream.abort();
    await until(() => parley.backend.activity().running === 0, "the aborted generation to free its slot");
    // Not a timing check: a generation that ran on would have produced max_tokens (4096) tokens.
    const generated = parley.backend.generatedTokens - before;
    assert.ok(generated < 1000, `generation stopped early (${generated} tokens generated after the abort)`);
    const next = await postChat(parley, { ...LONG, max_tokens: 8 });
    const body = (await next.json()) as Completion;
    assert.equal(next.status, 200);
    assert.ok(body.usage.completion_tokens <= 8);
    assert.deepEqual(parley.backend.activity(), { running: 0, waiting: 0 });
  });

  test("before a non-streamed answer: the slot is freed and the next request is served", async () => {
    const controller = new AbortController();
    const pending = postChat(parley, LONG, { signal: controller.signal }).catch((error: unknown) => error);
    await until(() => parley.backend.activity().running === 1, "the request to start generating");
    const before = parley.backend.generatedTokens;
    controller.abort();
    assert.ok((await pending) instanceof Error, "the client's fetch was aborted");
    await until(() => parley.backend.activity().running === 0, "the abandoned generation to free its slot");
    assert.ok(parley.backend.generatedTokens - before < 1000, "generation stopped early");
    await expectServes(parley);
  });
});

describe("the queue", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: await tinyQwen2(), contextSize: 8192, parallel: 1, queueSize: 1 });
  });
  after(async () => {
    await parley?.close();
  });

  /** A request that waits in the queue: its fetch resolves only once it runs. */
  const enqueue = (): { controller: AbortController; settled: Promise<unknown> } => {
    const controller = new AbortController();
    const settled = postChat(parley, { ...LONG, stream: true }, { signal: controller.signal }).then(
      async (response) => {
        await response.body?.cancel();
        return response;
      },
      (error: unknown) => error,
    );
    return { controller, settled };
  };

  test("full: 503 server_overloaded with Retry-After; the server serves again once it drains", async () => {
    const running = await openStream(parley, LONG);
    const waiting = enqueue();
    await until(() => parley.backend.activity().waiting === 1, "the second request to wait in the queue");
    assert.deepEqual(parley.backend.activity(), { running: 1, waiting: 1 });

    for (const stream of [false, true]) {
      const response = await postChat(parley, { ...LONG, max_tokens: 4, stream });
      const retryAfter = response.headers.get("retry-after");
      await expectError(response, { status: 503, code: "server_overloaded", param: null, type: "overloaded_error" });
      assert.ok(retryAfter !== null && /^\d+$/.test(retryAfter), `Retry-After in seconds: ${retryAfter}`);
    }
    assert.deepEqual(parley.backend.activity(), { running: 1, waiting: 1 }, "a refused request takes no place");

    waiting.controller.abort();
    assert.ok((await waiting.settled) instanceof Error);
    await running.abort();
    await until(() => {
      const { running: busy, waiting: queued } = parley.backend.activity();
      return busy === 0 && queued === 0;
    }, "the queue to drain");
    await expectServes(parley);
  });

  test("a waiting request that is abandoned leaves the queue, and its place is free again", async () => {
    const running = await openStream(parley, LONG);
    const first = enqueue();
    await until(() => parley.backend.activity().waiting === 1, "a request to wait");
    first.controller.abort();
    assert.ok((await first.settled) instanceof Error);
    await until(() => parley.backend.activity().waiting === 0, "the abandoned request to leave the queue");
    assert.equal(parley.backend.activity().running, 1, "the running request is untouched");

    // Its place is free: another request waits instead of being refused.
    const second = enqueue();
    await until(() => parley.backend.activity().waiting === 1, "the next request to take the free place");
    second.controller.abort();
    assert.ok((await second.settled) instanceof Error);
    await until(() => parley.backend.activity().waiting === 0, "the second abandoned request to leave");

    await running.abort();
    await until(() => parley.backend.activity().running === 0, "the running request to stop");
    await expectServes(parley);
  });

  test("a waiting request runs when the one ahead of it finishes", async () => {
    const ahead = await openStream(parley, { ...LONG, max_tokens: 2048 });
    const controller = new AbortController();
    const queued = postChat(parley, { ...LONG, max_tokens: 4 }, { signal: controller.signal });
    await until(() => parley.backend.activity().waiting === 1, "the second request to wait");
    await ahead.abort();
    const response = await queued;
    assert.equal(response.status, 200);
    const body = (await response.json()) as Completion;
    assert.ok(body.usage.completion_tokens <= 4);
    await until(() => parley.backend.activity().running === 0, "the engine to go idle");
  });
});

/**
 * Shutdown drain: once draining, new requests get 503 and /ready 503; requests in flight
 * finish up to the deadline; the rest are stopped cleanly (error event, [DONE]) and
 * their ledger rows say "stopped"; `parley serve` exits 0 on SIGTERM.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { runCli } from "../helpers/cli.js";
import { STORIES_260K, tinyQwen2 } from "../helpers/models.js";
import { postChat, startParley, type RunningParley } from "../helpers/parley.js";

const LONG = { model: "test-model", messages: [{ role: "user", content: "Write a very long story." }], max_tokens: 4096, stream: true };

/** Reads an SSE body until it ends; resolves with its events. */
async function openStream(response: Response): Promise<{ first: Promise<void>; events: Promise<unknown[]> }> {
  assert.ok(response.body !== null);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let resolveFirst: () => void = () => undefined;
  const first = new Promise<void>((resolve) => {
    resolveFirst = resolve;
  });
  const events = (async () => {
    let text = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      if (text.includes('"content"')) resolveFirst();
    }
    resolveFirst();
    return text
      .split("\n\n")
      .filter((block) => block.startsWith("data: "))
      .map((block) => block.slice(6))
      .map((data) => (data === "[DONE]" ? data : (JSON.parse(data) as unknown)));
  })();
  return { first, events };
}

describe("draining a server", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: await tinyQwen2(), contextSize: 8192, parallel: 2 });
  });
  after(() => parley.close());

  test("a short request in flight finishes; drain reports it finished", async () => {
    const response = await postChat(parley, { ...LONG, max_tokens: 16 });
    assert.equal(response.status, 200);
    const stream = await openStream(response);
    const result = await parley.inFlight.drain(60_000);
    const events = await stream.events;
    assert.equal(events.at(-1), "[DONE]");
    assert.ok(events.some((event) => (event as { choices?: Array<{ finish_reason: string | null }> }).choices?.[0]?.finish_reason === "length"));
    assert.deepEqual(result, { finished: 1, stopped: 0 });
  });
});

describe("the drain deadline", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: await tinyQwen2(), contextSize: 8192, parallel: 1 });
  });
  after(() => parley.close());

  test("new requests get 503, /ready 503; the long stream is stopped with an error event and [DONE]; rows say so", async () => {
    const response = await postChat(parley, LONG, { headers: { "x-request-id": "drain-long-1" } });
    const stream = await openStream(response);
    await stream.first;
    const drained = parley.inFlight.drain(300);

    const refused = await postChat(parley, { ...LONG, stream: false, max_tokens: 4 }, { headers: { "x-request-id": "drain-refused-1" } });
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("retry-after"), "1");
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, "server_shutting_down");
    const ready = await fetch(`${parley.url}/ready`);
    assert.equal(ready.status, 503);
    assert.equal(((await ready.json()) as { status: string }).status, "draining");
    assert.equal((await fetch(`${parley.url}/health`)).status, 200, "still alive while draining");

    assert.deepEqual(await drained, { finished: 0, stopped: 1 });
    const events = await stream.events;
    assert.equal(events.at(-1), "[DONE]");
    const error = events.at(-2) as { error?: { code: string } };
    assert.equal(error.error?.code, "server_shutting_down");

    const rows = await parley.access.store.recentRequests(10);
    const long = rows.find((row) => row.requestId === "drain-long-1");
    assert.equal(long?.outcome, "stopped");
    assert.ok((long?.completionTokens ?? 0) > 0 && (long?.completionTokens ?? 0) < 4096);
    const refusedRow = rows.find((row) => row.requestId === "drain-refused-1");
    assert.equal(refusedRow?.outcome, "rejected");
    assert.equal(refusedRow?.status, 503);
  });
});

test("parley serve drains on SIGTERM and exits 0; the stream in flight ends with [DONE]", async () => {
  const server = runCli(["serve", "--model", STORIES_260K, "--port", "0", "--threads", "1", "--drain-timeout", "0"]);
  try {
    const url = (await server.waitFor(/Parley listening on (http:\/\/[^"\s]+)/))[1] ?? "";
    for (let i = 0; i < 300 && (await fetch(`${url}/health`).catch(() => undefined))?.status !== 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "stories260K", messages: [{ role: "user", content: "Once" }], max_tokens: 1900, stream: true }),
    });
    const stream = await openStream(response);
    await stream.first;
    server.child.kill("SIGTERM");
    const events = await stream.events;
    assert.equal(events.at(-1), "[DONE]");
    assert.equal(await server.exited(), 0);
    assert.match(server.output(), /"msg":"drained; shutting down"/);
  } finally {
    await server.stop();
  }
});

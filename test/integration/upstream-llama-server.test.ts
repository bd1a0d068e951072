/**
 * llama.cpp's own `llama-server` (../shared/tools) as a real third-party upstream: its
 * `chatcmpl-` ids, `content: null` first delta, `timings`, `system_fingerprint`, its error
 * shapes, and the 500 that its Jinja output parser emits mid-stream on random-weight output
 * all reach Parley for real, and the client sees only the seed's shape.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { freePort, startServer, type ServerProcess, TOOLS } from "../../bench/lib/processes.js";
import { assertCompletionShape, chunksOf, expectError, streamedText, type Chunk, type Completion } from "../helpers/chat-assertions.js";
import { startGateway, type RunningGateway } from "../helpers/gateway.js";
import { STORIES_260K, tinyQwen2 } from "../helpers/models.js";
import { postChat, readEvents } from "../helpers/parley.js";

async function startLlamaServer(model: string, extra: readonly string[] = []): Promise<ServerProcess> {
  const port = await freePort();
  const args = ["-m", model, "-t", "1", "-c", "2048", "-np", "2", "--host", "127.0.0.1", "--port", String(port), "--no-webui", ...extra];
  return startServer("llama-server", path.join(TOOLS, "llama-server"), args, port);
}

function gatewayYaml(url: string): string {
  return ["models:", "  - name: stories", "    backend: upstream", "    upstreams:", `      - url: ${url}/v1`].join("\n");
}

describe("llama-server behind Parley", () => {
  let server: ServerProcess;
  let gateway: RunningGateway;
  before(async () => {
    server = await startLlamaServer(STORIES_260K);
    gateway = await startGateway(gatewayYaml(server.url));
  });
  after(async () => {
    await gateway.close();
    await server.stop();
  });

  const body = { model: "stories", messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 8, temperature: 0 };

  test("a non-streamed answer: the seed's shape, Parley's id, llama-server's exact usage, no timings", async () => {
    const direct = (await (await postChat(server, body)).json()) as Completion & { timings?: unknown; system_fingerprint?: string };
    assert.match(direct.id, /^chatcmpl-/);
    assert.ok(direct.timings !== undefined && direct.system_fingerprint !== undefined, "the quirks are really there upstream");
    const response = await postChat(gateway, body);
    const answer = (await response.json()) as Completion;
    assertCompletionShape(answer, "stories");
    assert.equal(answer.choices[0]?.message.content, direct.choices[0]?.message.content);
    assert.equal(answer.usage.prompt_tokens, direct.usage.prompt_tokens);
    assert.equal(answer.usage.completion_tokens, direct.usage.completion_tokens);
  });

  test("a stream: the content:null first delta becomes the seed's role chunk; usage and cached tokens are llama-server's", async () => {
    const direct = await readEvents(await postChat(server, { ...body, stream: true }));
    assert.equal((direct[0] as Chunk).choices[0]?.delta.content, null, "llama-server's first delta has content null");
    const response = await postChat(gateway, { ...body, stream: true, stream_options: { include_usage: true } });
    assert.equal(response.status, 200);
    const chunks = chunksOf(await readEvents(response)) as Chunk[];
    assert.deepEqual(chunks[0]?.choices[0]?.delta, { role: "assistant", content: "" });
    for (const chunk of chunks) {
      assert.match(chunk.id, /^cmpl-/);
      assert.ok(!("timings" in chunk) && !("system_fingerprint" in chunk), "no upstream-only fields");
      for (const choice of chunk.choices) assert.notEqual(choice.delta.content, null);
    }
    const usage = (chunks.at(-1) as unknown as { usage: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details: { cached_tokens: number } } }).usage;
    assert.equal(usage.completion_tokens, 8);
    // The same prompt again: llama-server reuses its slot's cache, and says so.
    assert.ok(usage.prompt_tokens_details.cached_tokens > 0, `cached ${usage.prompt_tokens_details.cached_tokens}`);
    assert.ok(streamedText(chunks).length > 0);
  });

  test("llama-server's context-size error becomes context_length_exceeded, without its address", async () => {
    const response = await postChat(gateway, { ...body, messages: [{ role: "user", content: "hello ".repeat(3000) }] });
    const error = await expectError(response, { status: 400, code: "context_length_exceeded", param: "messages" });
    assert.match(error.error.message, /context/);
    assert.ok(!error.error.message.includes("127.0.0.1"), error.error.message);
  });
});

describe("llama-server's Jinja parser failing mid-stream", () => {
  let server: ServerProcess;
  let gateway: RunningGateway;
  before(async () => {
    // Random weights with the real Qwen2 template: the Jinja path's output parser rejects
    // the gibberish partway through and llama-server sends an error event (a real 500).
    server = await startLlamaServer(await tinyQwen2());
    gateway = await startGateway(gatewayYaml(server.url));
  });
  after(async () => {
    await gateway.close();
    await server.stop();
  });

  test("after the first text, the stream ends with Parley's error event and [DONE]; the upstream stays in rotation", async () => {
    let cutMidStream = 0;
    for (let seed = 1; seed <= 12; seed++) {
      const response = await postChat(gateway, { model: "stories", messages: [{ role: "user", content: "Hi" }], max_tokens: 30, temperature: 1, seed, stream: true });
      if (response.status !== 200) {
        // The parser failed before any text: nothing was sent, and with no other upstream it is a 502.
        await expectError(response, { status: 502, code: "upstream_error" });
        continue;
      }
      const events = await readEvents(response);
      assert.equal(events.at(-1), "[DONE]");
      const failure = events.find((event) => typeof event === "object" && event !== null && "error" in event) as { error: { code: string; message: string } } | undefined;
      if (failure === undefined) continue;
      cutMidStream += 1;
      assert.equal(failure.error.code, "upstream_error");
      assert.match(failure.error.message, /peg-native format/, "llama-server's own reason is passed on");
      assert.equal(events.length >= 3, true, "text had been streamed before the error");
    }
    assert.ok(cutMidStream > 0, "llama-server failed at least one stream mid-way");
    const view = await gateway.admin<{ data: Array<{ upstreams: Array<{ state: string }> }> }>("/admin/v1/upstreams");
    assert.equal(view.data[0]?.upstreams[0]?.state, "closed", "an upstream's complaint about its model's output is not a health failure");
  });
});

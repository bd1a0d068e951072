/**
 * The official `openai` npm SDK against Parley, unchanged: non-streaming, streaming,
 * the `chat.completions.stream()` helper, errors, and the seed's path as the base URL.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import type { ChatCompletionCreateParamsNonStreaming } from "openai/resources/chat/completions";
import { COMPLETION_ID } from "../helpers/chat-assertions.js";
import { STORIES_260K } from "../helpers/models.js";
import { startParley, type RunningParley } from "../helpers/parley.js";

const MODEL = "Qwen/Qwen2-7B-Instruct";
const KEY = "sk-parley-sdk-test";

const request = {
  model: MODEL,
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "Once upon a time" },
  ],
  temperature: 0,
  seed: 42,
  max_tokens: 40,
} satisfies ChatCompletionCreateParamsNonStreaming;

describe("the openai SDK", () => {
  let parley: RunningParley;
  let client: OpenAI;
  let reference: OpenAI.Chat.Completions.ChatCompletion;

  before(async () => {
    parley = await startParley({ modelPath: STORIES_260K, aliases: [MODEL], apiKeys: [KEY] });
    client = new OpenAI({ baseURL: `${parley.url}/v1`, apiKey: KEY, maxRetries: 0 });
    reference = await client.chat.completions.create(request);
  });
  after(async () => {
    await parley?.close();
  });

  test("non-streaming create", async () => {
    const { data: completion, response } = await client.chat.completions.create(request).withResponse();
    assert.ok((response.headers.get("x-request-id") ?? "").length > 0);
    assert.match(completion.id, COMPLETION_ID);
    assert.equal(completion.object, "chat.completion");
    assert.equal(completion.model, MODEL);
    assert.equal(completion.choices.length, 1);
    const [choice] = completion.choices;
    assert.ok(choice !== undefined);
    assert.equal(choice.message.role, "assistant");
    assert.ok((choice.message.content ?? "").length > 0, "the stories model writes something");
    assert.deepEqual(choice.message.tool_calls, []);
    assert.ok(choice.finish_reason === "stop" || choice.finish_reason === "length");
    const usage = completion.usage;
    assert.ok(usage !== undefined);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    assert.ok(usage.completion_tokens <= request.max_tokens);
    // Temperature 0 with a seed: the same answer every time.
    assert.equal(choice.message.content, reference.choices[0]?.message.content);
  });

  test("the seed's path as the base URL", async () => {
    const seedClient = new OpenAI({ baseURL: `${parley.url}/model/api/v1`, apiKey: KEY, maxRetries: 0 });
    const completion = await seedClient.chat.completions.create(request);
    assert.equal(completion.model, MODEL);
    assert.equal(completion.choices[0]?.message.content, reference.choices[0]?.message.content);
    const models = await seedClient.models.list();
    assert.ok(models.data.some((model) => model.id === MODEL));
  });

  test("streaming create with include_usage", async () => {
    const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
    const ids = new Set<string>();
    let content = "";
    let role: string | undefined;
    const finishReasons: string[] = [];
    let usage: OpenAI.Completions.CompletionUsage | undefined;
    let chunksAfterUsage = 0;
    for await (const chunk of stream) {
      ids.add(chunk.id);
      assert.equal(chunk.object, "chat.completion.chunk");
      if (usage !== undefined) chunksAfterUsage += 1;
      if (chunk.usage) {
        assert.deepEqual(chunk.choices, [], "the usage chunk has no choices");
        usage = chunk.usage;
        continue;
      }
      const choice = chunk.choices[0];
      assert.ok(choice !== undefined);
      role ??= choice.delta.role;
      content += choice.delta.content ?? "";
      if (choice.finish_reason !== null) finishReasons.push(choice.finish_reason);
    }
    assert.equal(ids.size, 1);
    assert.match([...ids][0] ?? "", COMPLETION_ID);
    assert.equal(role, "assistant");
    assert.equal(content, reference.choices[0]?.message.content);
    assert.deepEqual(finishReasons, [reference.choices[0]?.finish_reason]);
    assert.deepEqual(usage && { ...usage, prompt_tokens_details: undefined }, { ...reference.usage, prompt_tokens_details: undefined });
    assert.equal(chunksAfterUsage, 0, "usage is the last chunk");
  });

  test("streaming without include_usage has no usage chunk", async () => {
    const stream = await client.chat.completions.create({ ...request, stream: true });
    let content = "";
    for await (const chunk of stream) {
      assert.ok(!chunk.usage, "no usage without include_usage");
      assert.equal(chunk.choices.length, 1);
      content += chunk.choices[0]?.delta.content ?? "";
    }
    assert.equal(content, reference.choices[0]?.message.content);
  });

  test("chat.completions.stream(...).finalChatCompletion()", async () => {
    const deltas: string[] = [];
    const runner = client.chat.completions.stream({ ...request, stream_options: { include_usage: true } });
    runner.on("content", (delta) => deltas.push(delta));
    const final = await runner.finalChatCompletion();
    assert.match(final.id, COMPLETION_ID);
    assert.equal(final.model, MODEL);
    const [choice] = final.choices;
    assert.ok(choice !== undefined);
    assert.equal(choice.message.role, "assistant");
    assert.equal(choice.message.content, reference.choices[0]?.message.content);
    assert.equal(choice.finish_reason, reference.choices[0]?.finish_reason);
    assert.equal(deltas.join(""), choice.message.content);
    assert.equal(final.usage?.completion_tokens, reference.usage?.completion_tokens);
    assert.equal(final.usage?.prompt_tokens, reference.usage?.prompt_tokens);
  });

  test("a stop string through the SDK", async () => {
    const text = reference.choices[0]?.message.content ?? "";
    const stop = text.includes(".") ? "." : " ";
    assert.ok(text.includes(stop), `the reference text has '${stop}': ${JSON.stringify(text)}`);
    const completion = await client.chat.completions.create({ ...request, stop: [stop] });
    const choice = completion.choices[0] as OpenAI.Chat.Completions.ChatCompletion.Choice & { stop_reason?: string | null };
    assert.equal(choice.finish_reason, "stop");
    assert.equal(choice.stop_reason, stop);
    assert.equal(choice.message.content, text.slice(0, text.indexOf(stop)));
  });

  test("errors arrive as the SDK's typed errors", async () => {
    await assert.rejects(client.chat.completions.create({ ...request, temperature: 1.5 }), (error: unknown) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.status, 400);
      assert.equal(error.code, "invalid_value");
      assert.equal(error.param, "temperature");
      assert.equal(error.type, "invalid_request_error");
      assert.ok((error.requestID ?? "").length > 0, "the SDK reads x-request-id");
      return true;
    });
    await assert.rejects(client.chat.completions.create({ ...request, model: "no-such-model" }), (error: unknown) => {
      assert.ok(error instanceof OpenAI.NotFoundError, String(error));
      assert.equal(error.code, "model_not_found");
      assert.equal(error.param, "model");
      return true;
    });
    const wrongKey = new OpenAI({ baseURL: `${parley.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
    await assert.rejects(wrongKey.chat.completions.create(request), (error: unknown) => {
      assert.ok(error instanceof OpenAI.AuthenticationError, String(error));
      assert.equal(error.code, "invalid_api_key");
      return true;
    });
    await assert.rejects(
      client.chat.completions.create({ ...request, stream: true, logprobs: true }),
      (error: unknown) => error instanceof OpenAI.BadRequestError && error.param === "logprobs",
    );
  });

  test("models.list()", async () => {
    const models = await client.models.list();
    const ids = models.data.map((model) => model.id);
    assert.ok(ids.includes(MODEL) && ids.includes("test-model"), ids.join(", "));
  });
});

/**
 * The seed's own example, run as written with the real `curl`, and the response shape it
 * documents; `x-request-id` on every response; API keys (DESIGN §2 stages 1–2, §3).
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { promisify } from "node:util";
import { assertCompletionShape, chatBody, chunksOf, expectError, streamedText, type Completion } from "../helpers/chat-assertions.js";
import { SHARED_MODELS, tinyQwen2 } from "../helpers/models.js";
import { postChat, startParley, type RunningParley } from "../helpers/parley.js";

const run = promisify(execFile);

const SEED = path.resolve(SHARED_MODELS, "../seed/chat-completions-api.txt");
const SEED_HOST = "https://demo.cdc.datenfab.com";
const SEED_MODEL = "Qwen/Qwen2-7B-Instruct";
const KEY = "sk-parley-test-0123456789";

/** The "Example API Call" of the seed, verbatim but for the host. */
function seedCurlCommand(url: string): string {
  const seed = readFileSync(SEED, "utf8");
  const start = seed.indexOf("curl -X POST");
  const end = seed.lastIndexOf("}'");
  assert.ok(start !== -1 && end > start, "the seed has its curl example");
  const command = seed.slice(start, end + 2);
  assert.ok(command.includes(`${SEED_HOST}/model/api/v1/chat/completions`));
  assert.ok(command.includes('-H "Authorization: Bearer $YOUR_API_KEY"'));
  return command.replace(SEED_HOST, url);
}

async function curl(command: string, apiKey: string): Promise<string> {
  const { stdout } = await run("bash", ["-c", command], { env: { ...process.env, YOUR_API_KEY: apiKey }, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

describe("the seed's curl example", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: await tinyQwen2(), aliases: [SEED_MODEL], apiKeys: [KEY] });
  });
  after(async () => {
    await parley?.close();
  });

  test("run as written answers 200 in exactly the seed's shape", async () => {
    const stdout = await curl(seedCurlCommand(parley.url), KEY);
    const body = JSON.parse(stdout) as Completion;
    assertCompletionShape(body, SEED_MODEL);
    const [choice] = body.choices;
    assert.ok(choice !== undefined);
    // max_tokens 200 in the example: either the model ended its turn, or it ran out of tokens.
    assert.ok(body.usage.completion_tokens <= 200 && body.usage.completion_tokens >= 0);
    if (choice.finish_reason === "length") assert.equal(body.usage.completion_tokens, 200);
  });

  test("with a wrong key, curl gets the 401 envelope", async () => {
    const stdout = await curl(seedCurlCommand(parley.url), "sk-wrong");
    const body = JSON.parse(stdout) as { error: { code: string; type: string; param: unknown } };
    assert.equal(body.error.code, "invalid_api_key");
    assert.equal(body.error.type, "authentication_error");
    assert.equal(body.error.param, null);
  });

  test("streamed with curl: SSE chunks ending in [DONE]", async () => {
    const command = seedCurlCommand(parley.url)
      .replace('"max_tokens": 200', '"max_tokens": 20,\n"stream": true')
      .replace("curl -X POST", "curl -N -sS -X POST");
    assert.ok(command.includes('"stream": true'));
    const stdout = await curl(command, KEY);
    assert.match(stdout, /^(data: [^\n]+\n\n)+$/, "every event is `data: <payload>` and a blank line");
    const events = stdout
      .split("\n\n")
      .filter((block) => block.length > 0)
      .map((block) => block.slice("data: ".length))
      .map((data) => (data === "[DONE]" ? data : (JSON.parse(data) as unknown)));
    const chunks = chunksOf(events);
    for (const chunk of chunks) assert.equal(chunk.model, SEED_MODEL);
    assert.equal(typeof streamedText(chunks), "string");
  });

  test("the response names the model as requested: the alias or the id", async () => {
    for (const model of [SEED_MODEL, "test-model"]) {
      const response = await postChat(parley, chatBody({ model }), { apiKey: KEY, path: "/model/api/v1/chat/completions" });
      assert.equal(response.status, 200);
      assertCompletionShape((await response.json()) as Completion, model);
    }
  });

  test("both routes list every served name", async () => {
    for (const route of ["/v1/models", "/model/api/v1/models"]) {
      const response = await fetch(`${parley.url}${route}`, { headers: { authorization: `Bearer ${KEY}` } });
      assert.equal(response.status, 200);
      const body = (await response.json()) as { object: string; data: Array<{ id: string; object: string }> };
      assert.equal(body.object, "list");
      assert.deepEqual(body.data.map((model) => model.id).sort(), [SEED_MODEL, "test-model"].sort());
      for (const model of body.data) assert.equal(model.object, "model");
    }
  });
});

describe("x-request-id", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: await tinyQwen2(), apiKeys: [KEY] });
  });
  after(async () => {
    await parley?.close();
  });

  const requestId = (response: Response): string => {
    const id = response.headers.get("x-request-id");
    assert.ok(id !== null && id.length > 0, `x-request-id on the ${response.status} response`);
    return id;
  };

  test("is on every response: 200, 200 stream, 400, 401, 404 model, 404 route, health", async () => {
    const responses = [
      await postChat(parley, chatBody(), { apiKey: KEY }),
      await postChat(parley, chatBody({ stream: true }), { apiKey: KEY }),
      await postChat(parley, chatBody({ temperature: 5 }), { apiKey: KEY }),
      await postChat(parley, chatBody()),
      await postChat(parley, chatBody({ model: "no-such-model" }), { apiKey: KEY }),
      await fetch(`${parley.url}/v1/no-such-route`, { headers: { authorization: `Bearer ${KEY}` } }),
      await fetch(`${parley.url}/health`),
    ];
    assert.deepEqual(
      responses.map((response) => response.status),
      [200, 200, 400, 401, 404, 404, 200],
    );
    const ids = responses.map(requestId);
    assert.equal(new Set(ids).size, ids.length, "a fresh id per request");
    await Promise.all(responses.map((response) => response.text()));
  });

  test("a client-sent id is echoed, on success and on errors alike", async () => {
    const cases: Array<[string, () => Promise<Response>]> = [
      ["ok", () => postChat(parley, chatBody(), { apiKey: KEY, headers: { "x-request-id": "client-ok-1" } })],
      ["stream", () => postChat(parley, chatBody({ stream: true }), { apiKey: KEY, headers: { "x-request-id": "client-stream-2" } })],
      ["400", () => postChat(parley, chatBody({ top_p: 0 }), { apiKey: KEY, headers: { "x-request-id": "client-400-3" } })],
      ["401", () => postChat(parley, chatBody(), { headers: { "x-request-id": "client-401-4" } })],
      ["404", () => fetch(`${parley.url}/nowhere`, { headers: { "x-request-id": "client-404-5", authorization: `Bearer ${KEY}` } })],
    ];
    let n = 1;
    for (const [name, send] of cases) {
      const response = await send();
      await response.text();
      assert.equal(response.headers.get("x-request-id"), `client-${name}-${n}`, name);
      n += 1;
    }
  });

  test("an unusable client id is replaced, not echoed", async () => {
    for (const unusable of ["has spaces in it", "x".repeat(1000), "semi;colon"]) {
      const response = await postChat(parley, chatBody(), { apiKey: KEY, headers: { "x-request-id": unusable } });
      await response.text();
      assert.equal(response.status, 200);
      const id = requestId(response);
      assert.notEqual(id, unusable);
    }
  });
});

describe("API keys", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: await tinyQwen2(), apiKeys: ["sk-other-key", KEY] });
  });
  after(async () => {
    await parley?.close();
  });

  test("no key: 401 invalid_api_key", async () => {
    await expectError(await postChat(parley, chatBody()), { status: 401, code: "invalid_api_key", param: null });
  });

  test("a wrong key: 401 invalid_api_key", async () => {
    for (const key of ["sk-wrong", `${KEY}x`, KEY.slice(0, -1), KEY.toUpperCase()]) {
      await expectError(await postChat(parley, chatBody(), { apiKey: key }), { status: 401, code: "invalid_api_key", param: null });
    }
  });

  test("a malformed Authorization header: 401 invalid_api_key", async () => {
    for (const authorization of [KEY, `Basic ${Buffer.from(`user:${KEY}`).toString("base64")}`, "Bearer", "Bearer ", `Token ${KEY}`, `Bearer ${KEY} extra`, `Bearer${KEY}`]) {
      const response = await postChat(parley, chatBody(), { headers: { authorization } });
      await expectError(response, { status: 401, code: "invalid_api_key", param: null });
    }
  });

  test("every configured key works", async () => {
    for (const key of [KEY, "sk-other-key"]) {
      const response = await postChat(parley, chatBody(), { apiKey: key });
      assert.equal(response.status, 200, await response.text());
    }
  });

  test("auth comes before the body: no key and a bad body is a 401, not a 400", async () => {
    await expectError(await postChat(parley, "{not json"), { status: 401, code: "invalid_api_key" });
    await expectError(await postChat(parley, chatBody({ temperature: 9 })), { status: 401, code: "invalid_api_key" });
  });

  test("the model list needs a key; /health does not", async () => {
    await expectError(await fetch(`${parley.url}/v1/models`), { status: 401, code: "invalid_api_key" });
    const health = await fetch(`${parley.url}/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, "ok");
  });
});

/**
 * Bad input of every kind (DESIGN §2 stages 3–4, §3): each answered with the one error
 * envelope and the right status, never a 500, and the server keeps serving afterwards.
 */
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chatBody, expectError, expectServes } from "../helpers/chat-assertions.js";
import { STORIES_260K } from "../helpers/models.js";
import { postChat, startParley, type RunningParley } from "../helpers/parley.js";

const MIB = 1024 * 1024;

/** POSTs a raw body with a given content type (or none at all). */
function postRaw(parley: RunningParley, body: string | Uint8Array, contentType: string | null): Promise<Response> {
  const headers: Record<string, string> = contentType === null ? {} : { "content-type": contentType };
  return fetch(`${parley.url}/v1/chat/completions`, { method: "POST", headers, body });
}

/** A JSON body of exactly `bytes` bytes, by padding one message. */
function bodyOfSize(bytes: number): string {
  const empty = JSON.stringify(chatBody({ messages: [{ role: "user", content: "" }] }));
  const body = JSON.stringify(chatBody({ messages: [{ role: "user", content: "a".repeat(bytes - empty.length) }] }));
  assert.equal(Buffer.byteLength(body), bytes);
  return body;
}

describe("bad input", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: STORIES_260K });
  });
  after(async () => {
    await parley?.close();
  });
  afterEach(async () => {
    await expectServes(parley);
  });

  test("malformed JSON: 400 invalid_json", async () => {
    const malformed = [
      '{"model": "test-model", "messages": [',
      "{'model': 'test-model'}",
      '{"model": "test-model",}',
      '{"model": "test-model"} {"again": true}',
      '{"model": "test-model", "temperature": NaN}',
      '{"model": "test-model", "temperature": Infinity}',
      "not json at all",
      "",
    ];
    for (const body of malformed) {
      await expectError(await postRaw(parley, body, "application/json"), { status: 400, code: "invalid_json", param: null });
    }
  });

  test("JSON with a prototype-poisoning key: 400, not a 500", async () => {
    const body = '{"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "__proto__": {"max_tokens": 1}}';
    await expectError(await postRaw(parley, body, "application/json"), { status: 400, code: "invalid_json", param: null });
  });

  test("a JSON body that is not an object: 400 invalid_type", async () => {
    for (const body of ["[]", "null", '"a string"', "42", "true"]) {
      await expectError(await postRaw(parley, body, "application/json"), { status: 400, code: "invalid_type", param: null });
    }
  });

  test("JSON under any casing and charset of application/json is accepted", async () => {
    for (const contentType of ["application/json; charset=utf-8", "Application/JSON", "application/json;charset=UTF-8"]) {
      const response = await postRaw(parley, JSON.stringify(chatBody()), contentType);
      assert.equal(response.status, 200, `${contentType}: ${await response.text()}`);
    }
  });

  test("a non-JSON content type: 415 unsupported_media_type", async () => {
    const json = JSON.stringify(chatBody());
    const cases: Array<[string, string]> = [
      ["application/x-www-form-urlencoded", "model=test-model&messages=hi"],
      ["application/xml", "<chat/>"],
      ["multipart/form-data; boundary=x", "--x--"],
      ["text/plain", json],
      ["text/plain; charset=utf-8", json],
    ];
    for (const [contentType, body] of cases) {
      const error = await expectError(await postRaw(parley, body, contentType), { status: 415, code: "unsupported_media_type", param: null });
      assert.match(error.error.message, /application\/json/i, "says what to send instead");
    }
  });

  test("a body over the default 1 MiB limit: 413 request_too_large", async () => {
    await expectError(await postRaw(parley, bodyOfSize(MIB + 1), "application/json"), { status: 413, code: "request_too_large", param: null });
    await expectError(await postRaw(parley, bodyOfSize(8 * MIB), "application/json"), { status: 413, code: "request_too_large", param: null });
  });

  test("a body just under 1 MiB is read (and then refused for the context, not the size)", async () => {
    await expectError(await postRaw(parley, bodyOfSize(MIB - 16), "application/json"), {
      status: 400,
      code: "context_length_exceeded",
      param: "messages",
    });
  });

  test("missing or empty required fields", async () => {
    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ model: undefined }, "model", "missing_required_parameter"],
      [{ model: null }, "model", "missing_required_parameter"],
      [{ model: "" }, "model", "invalid_value"],
      [{ messages: undefined }, "messages", "missing_required_parameter"],
      [{ messages: [] }, "messages", "invalid_value"],
      [{ messages: [{ content: "hi" }] }, "messages[0].role", "missing_required_parameter"],
      [{ messages: [{ role: "user" }] }, "messages[0].content", "missing_required_parameter"],
    ];
    for (const [overrides, param, code] of cases) {
      await expectError(await postChat(parley, chatBody(overrides)), { status: 400, code, param });
    }
  });

  test("a wrong type anywhere: 400 invalid_type naming the param", async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ model: 7 }, "model"],
      [{ model: ["test-model"] }, "model"],
      [{ messages: "Hello!" }, "messages"],
      [{ messages: { role: "user", content: "Hello!" } }, "messages"],
      [{ messages: [null] }, "messages[0]"],
      [{ messages: ["Hello!"] }, "messages[0]"],
      [{ messages: [{ role: "user", content: 42 }] }, "messages[0].content"],
      [{ messages: [{ role: "user", content: null }] }, "messages[0].content"],
      [{ messages: [{ role: "user", content: { text: "hi" } }] }, "messages[0].content"],
      [{ messages: [{ role: "user", content: [{ type: "text", text: 5 }] }] }, "messages[0].content[0].text"],
      [{ messages: [{ role: "user", content: ["hi"] }] }, "messages[0].content[0]"],
      [{ messages: [{ role: 1, content: "hi" }] }, "messages[0].role"],
      [{ temperature: "0.5" }, "temperature"],
      [{ temperature: true }, "temperature"],
      [{ top_p: [0.5] }, "top_p"],
      [{ max_tokens: "10" }, "max_tokens"],
      [{ presence_penalty: {} }, "presence_penalty"],
      [{ frequency_penalty: "0" }, "frequency_penalty"],
      [{ stream: "true" }, "stream"],
      [{ stream: 1 }, "stream"],
      [{ seed: 1.5 }, "seed"],
      [{ seed: "42" }, "seed"],
      [{ stream_options: "include_usage" }, "stream_options"],
      [{ stream: true, stream_options: { include_usage: "yes" } }, "stream_options.include_usage"],
    ];
    for (const [overrides, param] of cases) {
      await expectError(await postChat(parley, chatBody(overrides)), { status: 400, code: "invalid_type", param });
    }
  });

  test("an unknown role: 400 invalid_value", async () => {
    for (const role of ["wizard", "USER", ""]) {
      await expectError(await postChat(parley, chatBody({ messages: [{ role, content: "hi" }] })), {
        status: 400,
        code: "invalid_value",
        param: "messages[0].role",
      });
    }
  });

  test("huge numbers: 1e400 (Infinity once parsed) and 1e20", async () => {
    const raw = (field: string, literal: string): string =>
      `{"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "${field}": ${literal}}`;
    const cases: Array<[string, string, string]> = [
      ["temperature", "1e400", "invalid_type"],
      ["temperature", "-1e400", "invalid_type"],
      ["top_p", "1e400", "invalid_type"],
      ["presence_penalty", "-1e400", "invalid_type"],
      ["max_tokens", "1e400", "invalid_type"],
      ["max_tokens", "1e20", "invalid_value"],
      ["seed", "1e400", "invalid_type"],
      ["seed", "1e20", "invalid_type"],
      ["temperature", "1e-400", "ok"],
    ];
    for (const [field, literal, code] of cases) {
      const response = await postRaw(parley, raw(field, literal), "application/json");
      if (code === "ok") assert.equal(response.status, 200, `${field}: ${literal} underflows to 0: ${await response.text()}`);
      else await expectError(response, { status: 400, code, param: field });
    }
  });

  test("the message for a non-finite number says what was wrong with it", async () => {
    const response = await postRaw(
      parley,
      '{"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}',
      "application/json",
    );
    const { error } = await expectError(response, { status: 400, code: "invalid_type", param: "temperature" });
    assert.doesNotMatch(error.message, /expected a number, but got a number/, `a self-contradicting message: ${error.message}`);
  });

  test("unsupported features: a 400 that says it is not supported", async () => {
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      [
        "an image content part",
        {
          messages: [
            {
              role: "user",
              content: [
                { type: "text", text: "What is this?" },
                { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
              ],
            },
          ],
        },
        /^messages\[0\]\.content/,
      ],
      [
        "an input_audio content part",
        { messages: [{ role: "user", content: [{ type: "input_audio", input_audio: { data: "", format: "wav" } }] }] },
        /^messages\[0\]\.content/,
      ],
      [
        "a tool message",
        {
          messages: [
            { role: "user", content: "hi" },
            { role: "tool", content: "42", tool_call_id: "call_1" },
          ],
        },
        /^messages\[1\]/,
      ],
      [
        "an assistant message with tool_calls",
        {
          messages: [
            { role: "user", content: "hi" },
            { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: "{}" } }] },
          ],
        },
        /^messages\[1\]/,
      ],
      ["n: 2", { n: 2 }, /^n$/],
      ["tools", { tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }] }, /^tools$/],
      ["tool_choice required", { tool_choice: "required" }, /^tool_choice$/],
      ["response_format json_object", { response_format: { type: "json_object" } }, /^response_format$/],
      ["response_format json_schema", { response_format: { type: "json_schema", json_schema: { name: "x", schema: {} } } }, /^response_format$/],
      ["logprobs: true", { logprobs: true }, /^logprobs$/],
      ["top_logprobs", { top_logprobs: 3 }, /^top_logprobs$/],
      ["logit_bias", { logit_bias: { "50256": -100 } }, /^logit_bias$/],
    ];
    for (const [name, overrides, param] of cases) {
      const { error } = await expectError(await postChat(parley, chatBody(overrides)), { status: 400, code: "unsupported_parameter" });
      assert.match(error.message, /not supported/i, `${name}: ${error.message}`);
      assert.match(error.param ?? "", param, `${name}: param ${error.param}`);
    }
  });

  test("the 'off' values of unsupported features are accepted", async () => {
    const off: Array<Record<string, unknown>> = [
      { n: 1 },
      { n: null },
      { logprobs: false },
      { tools: [] },
      { tool_choice: "none" },
      { response_format: { type: "text" } },
      { logit_bias: {} },
      { logit_bias: null },
      { messages: [{ role: "user", content: [{ type: "text", text: "Once upon " }, { type: "text", text: "a time" }] }] },
      { messages: [{ role: "developer", content: "Be brief." }, { role: "user", content: "hi" }] },
    ];
    for (const overrides of off) {
      const response = await postChat(parley, chatBody(overrides));
      assert.equal(response.status, 200, `${JSON.stringify(overrides)}: ${await response.text()}`);
    }
  });

  test("unknown fields are ignored", async () => {
    const response = await postChat(
      parley,
      chatBody({ user: "alice", metadata: { team: "x" }, store: false, some_future_field: [1, { deep: true }], service_tier: "auto" }),
    );
    assert.equal(response.status, 200, await response.text());
  });

  test("an unknown model: 404 model_not_found on param 'model', streaming or not", async () => {
    for (const stream of [false, true]) {
      const { error } = await expectError(await postChat(parley, chatBody({ model: "gpt-4o", stream })), {
        status: 404,
        code: "model_not_found",
        param: "model",
      });
      assert.match(error.message, /gpt-4o/);
    }
  });

  test("an unknown route: 404 not_found", async () => {
    await expectError(await fetch(`${parley.url}/v1/nothing-here`), { status: 404, code: "not_found", param: null });
    await expectError(await postChat(parley, chatBody(), { path: "/v1/completions" }), { status: 404, code: "not_found", param: null });
    await expectError(await postChat(parley, chatBody(), { path: "/api/v1/chat/completions" }), { status: 404, code: "not_found" });
  });

  test("a wrong method on the chat route: a 4xx envelope", async () => {
    for (const method of ["GET", "PUT", "DELETE"]) {
      const response = await fetch(`${parley.url}/v1/chat/completions`, { method });
      const status = response.status;
      assert.ok(status === 404 || status === 405, `${method}: ${status}`);
      await expectError(response, { status, code: status === 405 ? "method_not_allowed" : "not_found" });
    }
  });

  test("odd bodies never yield a 500", async () => {
    const deep = "[".repeat(200_000) + "]".repeat(200_000);
    const odd: string[] = [
      deep,
      `{"model": "test-model", "messages": ${deep}}`,
      JSON.stringify(chatBody({ messages: Array.from({ length: 5000 }, () => ({ role: "user", content: "hi" })) })),
      JSON.stringify(chatBody({ messages: [{ role: "user", content: "\ud800 lone surrogates \udc00" }] })),
      JSON.stringify(chatBody({ messages: [{ role: "user", content: "\u0000\u0001 control \u007f" }] })),
      JSON.stringify(chatBody({ stop: "x".repeat(100_000) })),
      JSON.stringify(chatBody({ model: "m".repeat(100_000) })),
      JSON.stringify(chatBody({ messages: [{ role: "user", content: [] }] })),
      JSON.stringify(chatBody({ messages: [{ role: "user", content: [{}] }] })),
      JSON.stringify(chatBody({ messages: [{ role: "user", content: [{ type: 5 }] }] })),
      JSON.stringify(chatBody({ stream_options: { include_usage: true } })),
      JSON.stringify(chatBody({ max_tokens: -0 })),
      JSON.stringify(chatBody({ seed: -(2 ** 53) + 1 })),
      JSON.stringify({ ...chatBody(), constructor: { prototype: { polluted: true } } }),
    ];
    for (const body of odd) {
      const response = await postRaw(parley, body, "application/json");
      const text = await response.text();
      assert.ok(response.status < 500, `${response.status} for ${body.slice(0, 80)}: ${text.slice(0, 300)}`);
      if (response.status >= 400) assert.ok(JSON.parse(text).error !== undefined, "an error envelope");
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined, "no prototype pollution");
  });
});

describe("a configured body limit", () => {
  let parley: RunningParley;
  before(async () => {
    parley = await startParley({ modelPath: STORIES_260K, bodyLimit: 4096 });
  });
  after(async () => {
    await parley?.close();
  });

  test("a body over it: 413; at it: served", async () => {
    await expectError(await postRaw(parley, bodyOfSize(4097), "application/json"), { status: 413, code: "request_too_large", param: null });
    const { error } = await expectError(await postRaw(parley, bodyOfSize(100_000), "application/json"), { status: 413, code: "request_too_large" });
    assert.match(error.message, /4096/, "says what the limit is");
    const atLimit = bodyOfSize(4096).replace(/a{4000}/, (run) => "Once upon a time. ".repeat(250).slice(0, run.length));
    const response = await postRaw(parley, atLimit, "application/json");
    assert.equal(response.status, 200, await response.text());
    await expectServes(parley);
  });
});

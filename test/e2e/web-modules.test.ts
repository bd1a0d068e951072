/**
 * The pure parts of the pages' browser modules, run in Node (no browser needed): the SSE
 * reader against fragments split mid-line, mid-CRLF and mid-character, the curl snippet's
 * shell quoting (run through bash), and the stop field's escapes.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { PROJECT_ROOT } from "../helpers/models.js";

type ServerSentEvent = { event: string; data: string };

/** Loads a module from web/js/ (plain browser JavaScript, without types). */
async function webModule<T>(name: string): Promise<T> {
  return (await import(pathToFileURL(path.join(PROJECT_ROOT, "web/js", name)).href)) as T;
}

const { readServerSentEvents } = await webModule<{ readServerSentEvents(body: ReadableStream<Uint8Array>): AsyncIterable<ServerSentEvent> }>("sse.js");
const { curlCommand, openaiCode } = await webModule<{ curlCommand(url: string, body: object): string; openaiCode(baseUrl: string, body: object): string }>(
  "snippets.js",
);

const { unescapeStop } = await webModule<{ unescapeStop(text: string): string }>("parameters.js");

function streamOf(pieces: readonly Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const piece of pieces) controller.enqueue(piece);
      controller.close();
    },
  });
}

async function events(pieces: readonly Uint8Array[]): Promise<ServerSentEvent[]> {
  const seen: ServerSentEvent[] = [];
  for await (const event of readServerSentEvents(streamOf(pieces))) seen.push(event);
  return seen;
}

describe("the SSE reader", () => {
  const text = 'data: {"a":"héllo 👋"}\r\n\r\n: a comment\ndata: line one\ndata: line two\n\nevent: error\ndata: [DONE]\r\r';
  const bytes = new TextEncoder().encode(text);
  const expected: ServerSentEvent[] = [
    { event: "message", data: '{"a":"héllo 👋"}' },
    { event: "message", data: "line one\nline two" },
    { event: "error", data: "[DONE]" },
  ];

  test("reads whole events from one chunk", async () => {
    assert.deepEqual(await events([bytes]), expected);
  });

  test("reads the same events from the bytes split at every possible point", async () => {
    for (let cut = 1; cut < bytes.length; cut += 1) {
      assert.deepEqual(await events([bytes.slice(0, cut), bytes.slice(cut)]), expected, `split at byte ${cut}`);
    }
  });

  test("reads them one byte at a time", async () => {
    assert.deepEqual(await events([...bytes].map((byte) => Uint8Array.of(byte))), expected);
  });

  test("ends a last event that has no blank line after it", async () => {
    assert.deepEqual(await events([new TextEncoder().encode("data: tail")]), [{ event: "message", data: "tail" }]);
  });
});

describe("the snippets", () => {
  const body = {
    model: "Qwen/Qwen2-7B-Instruct",
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: "It's $HOME and `date` and \\n and\na new line" },
    ],
    temperature: 0.7,
    top_p: 0.7,
    max_tokens: 200,
  };

  test("curl: the seed's form, and bash hands curl the body and key exactly", async () => {
    const command = curlCommand("http://127.0.0.1:8080/model/api/v1/chat/completions", body);
    assert.deepEqual(command.split("\n").slice(0, 4), [
      'curl -X POST "http://127.0.0.1:8080/model/api/v1/chat/completions" \\',
      '-H "Authorization: Bearer $YOUR_API_KEY" \\',
      '-H "Content-Type: application/json" \\',
      "-d '{",
    ]);
    // A stand-in curl that prints its arguments, NUL-separated.
    const { stdout } = await promisify(execFile)("bash", ["-c", `curl() { printf '%s\\0' "$@"; }\n${command}`], {
      env: { ...process.env, YOUR_API_KEY: "sk-test-123" },
    });
    const args = stdout.split("\0").slice(0, -1);
    assert.deepEqual(args.slice(0, 7), [
      "-X",
      "POST",
      "http://127.0.0.1:8080/model/api/v1/chat/completions",
      "-H",
      "Authorization: Bearer sk-test-123",
      "-H",
      "Content-Type: application/json",
    ]);
    assert.equal(args[7], "-d");
    assert.deepEqual(JSON.parse(args[8] ?? ""), body);
  });

  test("curl: a streamed request adds -N so the chunks print as they come", () => {
    assert.match(curlCommand("http://h/model/api/v1/chat/completions", { ...body, stream: true }).split("\n")[0] ?? "", / -N \\$/);
  });

  test("openai: the body is passed as written, and the key comes from the environment", () => {
    const code = openaiCode("http://127.0.0.1:8080/model/api/v1", body);
    assert.ok(code.includes(`client.chat.completions.create(${JSON.stringify(body, null, 2)})`));
    assert.ok(code.includes("apiKey: process.env.YOUR_API_KEY"));
  });
});

test("the stop field reads \\n, \\r, \\t and \\\\ as the characters they name, and nothing else", () => {
  assert.equal(unescapeStop("\\n"), "\n");
  assert.equal(unescapeStop("END\\tx\\r"), "END\tx\r");
  assert.equal(unescapeStop("a\\\\nb"), "a\\nb");
  assert.equal(unescapeStop("\\u0041 \\x"), "\\u0041 \\x");
});

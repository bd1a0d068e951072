/**
 * A fault-injecting OpenAI-compatible upstream for tests: a real `node:http` server on an
 * ephemeral loopback port, answering `POST /v1/chat/completions` with whatever behaviour the
 * test queued for that request, so gateway code can be driven through stalls, resets, error
 * statuses, malformed streams and recorded transcripts of real servers (test/fixtures/upstream).
 *
 * Every request is recorded, with the moment its connection closed: a test proves that a
 * client disconnect cancelled the upstream request by waiting for `closedAt`.
 */
import { readFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import path from "node:path";
import { setImmediate as nextTurn, setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

/** Where the recorded upstream transcripts and their manifest live. */
export const UPSTREAM_FIXTURES_DIR = fileURLToPath(new URL("../fixtures/upstream/", import.meta.url));

/** How the fake answers one `POST /v1/chat/completions`. */
export type Behaviour =
  /**
   * A well-formed reply, streamed or not as the request's `stream` asks, with usage
   * (`stream_options.include_usage` honoured) and an id `chatcmpl-fake-N`. `max_tokens` /
   * `max_completion_tokens` cut the text into a `length` finish. Text defaults to
   * "Hello! How can I help?"; `delayMs` waits before the headers, `tokenDelayMs` between chunks.
   */
  | { kind: "ok"; text?: string; delayMs?: number; tokenDelayMs?: number }
  /** This status and body (a string is sent as is, anything else as JSON), plus `headers`. */
  | { kind: "status"; status: number; body: unknown; headers?: Record<string, string> }
  /** Accept the request and never answer, until the client or `close()` ends the connection. */
  | { kind: "stall-before-headers" }
  /**
   * Send the headers and `chunks` content chunks, then go silent. A non-streaming request
   * gets its headers and the first half of its JSON body instead.
   */
  | { kind: "stall-after"; chunks: number }
  /** Reset the connection (TCP RST) before any byte of a response. */
  | { kind: "reset-before-headers" }
  /** Like `stall-after`, but reset the connection instead of going silent. */
  | { kind: "reset-after"; chunks: number }
  /** 200 `text/event-stream`: one valid chunk, then data lines that are not JSON, then `[DONE]`. */
  | { kind: "malformed-sse" }
  /**
   * The bytes of a fixture file (a name in test/fixtures/upstream, or an absolute path).
   * `status` and `contentType` default to the file's manifest entry, else 200 and a type from
   * the extension. `splitEvery` writes the body in pieces of that many bytes, so lines and
   * UTF-8 sequences arrive split; `pieceDelayMs` waits between pieces (defaults to one event
   * loop turn).
   */
  | { kind: "replay"; file: string; status?: number; contentType?: string; splitEvery?: number; pieceDelayMs?: number };

export interface RecordedRequest {
  readonly method: string;
  /** The path with its query string, as sent. */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The parsed JSON body; the raw text when it is not JSON; `undefined` when empty. */
  readonly body: unknown;
  /** `Date.now()` when the request arrived. */
  readonly startedAt: number;
  /** `Date.now()` when the fake finished writing its answer; unset while unanswered. */
  finishedAt?: number;
  /** `Date.now()` when the request's connection closed, from either side. */
  closedAt?: number;
}

export interface FakeUpstream {
  /** Base URL including `/v1`, e.g. `http://127.0.0.1:PORT/v1`. */
  readonly url: string;
  /** Every request received, in arrival order, health checks included. */
  readonly requests: readonly RecordedRequest[];
  /** Queue behaviours for the next chat requests, in order; when the queue is empty the default applies. */
  next(...behaviours: Behaviour[]): void;
  /** The behaviour once the queue is empty. Defaults to `{ kind: "ok" }`. */
  setDefault(behaviour: Behaviour): void;
  /** Stop listening and destroy every connection, stalled ones included. Idempotent. */
  close(): Promise<void>;
}

export interface FakeUpstreamOptions {
  /** The behaviour once the queue is empty. Defaults to `{ kind: "ok" }`. */
  readonly default?: Behaviour;
  /** When set, every route answers 401 unless `Authorization: Bearer <apiKey>` is sent. */
  readonly apiKey?: string;
  /** The model id listed by `GET /v1/models` and used when a request names none. Defaults to `"fake-model"`. */
  readonly model?: string;
}

const DEFAULT_TEXT = "Hello! How can I help?";

export async function startFakeUpstream(options: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  const model = options.model ?? "fake-model";
  const requests: RecordedRequest[] = [];
  const queue: Behaviour[] = [];
  let fallback: Behaviour = options.default ?? { kind: "ok" };
  let completions = 0;
  const sockets = new Set<Socket>();
  // Aborted by close(), so that no delay outlives the server and keeps the test process alive.
  const lifetime = new AbortController();

  // One close listener per connection, however many keep-alive requests it carries.
  const connections = new WeakMap<Socket, { closedAt?: number; requests: RecordedRequest[] }>();

  const server = createServer((request, response) => {
    const startedAt = Date.now();
    const socket = request.socket;
    readBody(request)
      .then((raw) => {
        const connection = connections.get(socket);
        const recorded: RecordedRequest = {
          method: request.method ?? "GET",
          path: request.url ?? "/",
          headers: request.headers,
          body: parseBody(raw),
          startedAt,
          // The client may have given up while its body was still being read.
          ...(connection?.closedAt === undefined ? {} : { closedAt: connection.closedAt }),
        };
        connection?.requests.push(recorded);
        requests.push(recorded);
        response.once("finish", () => (recorded.finishedAt = Date.now()));
        return route(request, response, recorded);
      })
      .catch((error: unknown) => {
        // A broken helper must be loud, not a hung test; an aborted upload is not an error.
        if (!socket.destroyed) console.error("fake-upstream:", error);
        socket.destroy();
      });
  });

  server.on("connection", (socket: Socket) => {
    const connection: { closedAt?: number; requests: RecordedRequest[] } = { requests: [] };
    connections.set(socket, connection);
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      connection.closedAt = Date.now();
      for (const recorded of connection.requests) recorded.closedAt ??= connection.closedAt;
    });
  });

  async function route(request: IncomingMessage, response: ServerResponse, recorded: RecordedRequest): Promise<void> {
    if (options.apiKey !== undefined && request.headers.authorization !== `Bearer ${options.apiKey}`) {
      // vLLM's --api-key middleware answer.
      sendJson(response, 401, { error: "Unauthorized" });
      return;
    }
    const pathname = new URL(recorded.path, "http://fake").pathname;
    if (request.method === "GET" && pathname === "/health") {
      response.writeHead(200, { "content-length": "0" }).end();
    } else if (request.method === "GET" && pathname === "/v1/models") {
      sendJson(response, 200, {
        object: "list",
        data: [{ id: model, object: "model", created: 1_700_000_000, owned_by: "fake-upstream" }],
      });
    } else if (request.method === "POST" && pathname === "/v1/chat/completions") {
      if (!isChatRequest(recorded.body)) {
        sendJson(response, 400, vllmError("The request body is not a JSON object with `messages`."));
        return;
      }
      const behaviour = queue.shift() ?? fallback;
      completions += 1;
      await answer(behaviour, recorded.body, response, `chatcmpl-fake-${completions}`);
    } else {
      sendJson(response, 404, { detail: "Not Found" });
    }
  }

  async function answer(behaviour: Behaviour, body: ChatRequest, response: ServerResponse, id: string): Promise<void> {
    const socket = response.socket;
    switch (behaviour.kind) {
      case "ok":
        if (!(await pause(behaviour.delayMs ?? 0, response))) return;
        await sendCompletion(response, body, id, behaviour.text ?? DEFAULT_TEXT, behaviour.tokenDelayMs ?? 0);
        return;
      case "status": {
        const text = typeof behaviour.body === "string" ? behaviour.body : JSON.stringify(behaviour.body);
        const type = typeof behaviour.body === "string" ? "text/plain; charset=utf-8" : "application/json";
        response.writeHead(behaviour.status, { "content-type": type, ...behaviour.headers }).end(text);
        return;
      }
      case "stall-before-headers":
        return;
      case "reset-before-headers":
        socket?.resetAndDestroy();
        return;
      case "stall-after":
      case "reset-after":
        await sendPartial(response, body, id, behaviour.chunks);
        if (behaviour.kind === "reset-after") response.socket?.resetAndDestroy();
        return;
      case "malformed-sse":
        response.writeHead(200, { "content-type": "text/event-stream; charset=utf-8" });
        response.write(sseEvent(chunk(id, body.model ?? model, { role: "assistant", content: "" }, null)));
        response.write(`data: {"id":"${id}","object":"chat.completion.chunk","choices":[{"delta":{"content":"Hel\n\n`);
        response.write("data: this is not json\n\n");
        response.write("garbage without a field name\n\n");
        response.end("data: [DONE]\n\n");
        return;
      case "replay":
        await replay(behaviour, response);
        return;
    }
  }

  async function sendCompletion(response: ServerResponse, body: ChatRequest, id: string, text: string, tokenDelayMs: number): Promise<void> {
    const all = splitTokens(text);
    const limit = body.max_completion_tokens ?? body.max_tokens;
    const pieces = typeof limit === "number" && limit < all.length ? all.slice(0, Math.max(0, limit)) : all;
    const finishReason = pieces.length < all.length ? "length" : "stop";
    const usage = {
      prompt_tokens: estimatePromptTokens(body),
      completion_tokens: pieces.length,
      total_tokens: estimatePromptTokens(body) + pieces.length,
    };
    if (body.stream !== true) {
      sendJson(response, 200, {
        id,
        object: "chat.completion",
        created: nowSeconds(),
        model: body.model ?? model,
        choices: [{ index: 0, message: { role: "assistant", content: pieces.join("") }, logprobs: null, finish_reason: finishReason }],
        usage,
      });
      return;
    }
    response.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    response.write(sseEvent(chunk(id, body.model ?? model, { role: "assistant", content: "" }, null)));
    for (const piece of pieces) {
      if (!(await pause(tokenDelayMs, response))) return;
      response.write(sseEvent(chunk(id, body.model ?? model, { content: piece }, null)));
    }
    response.write(sseEvent(chunk(id, body.model ?? model, { content: "" }, finishReason)));
    if (body.stream_options?.include_usage === true) {
      response.write(sseEvent({ id, object: "chat.completion.chunk", created: nowSeconds(), model: body.model ?? model, choices: [], usage }));
    }
    response.end("data: [DONE]\n\n");
  }

  /** Headers and the start of an answer, for the stall and reset behaviours. */
  async function sendPartial(response: ServerResponse, body: ChatRequest, id: string, chunks: number): Promise<void> {
    if (body.stream !== true) {
      const whole = JSON.stringify({ id, object: "chat.completion", created: nowSeconds(), model: body.model ?? model, choices: [] });
      response.writeHead(200, { "content-type": "application/json" });
      response.write(whole.slice(0, Math.floor(whole.length / 2)));
      return;
    }
    const pieces = splitTokens(DEFAULT_TEXT);
    response.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    response.write(sseEvent(chunk(id, body.model ?? model, { role: "assistant", content: "" }, null)));
    for (let index = 0; index < chunks; index += 1) {
      const piece = pieces[index % pieces.length] ?? "";
      response.write(sseEvent(chunk(id, body.model ?? model, { content: piece }, null)));
    }
    // Let the bytes reach the client before a reset can discard them.
    await writesFlushed(response);
  }

  async function replay(behaviour: Extract<Behaviour, { kind: "replay" }>, response: ServerResponse): Promise<void> {
    const file = path.isAbsolute(behaviour.file) ? behaviour.file : path.join(UPSTREAM_FIXTURES_DIR, behaviour.file);
    const bytes = await readFile(file);
    const entry = (await readManifest()).find((candidate) => candidate.file === path.basename(file));
    const status = behaviour.status ?? entry?.status ?? 200;
    const contentType = behaviour.contentType ?? entry?.contentType ?? contentTypeOf(file);
    response.writeHead(status, { "content-type": contentType });
    const size = behaviour.splitEvery;
    if (size === undefined || size <= 0) {
      response.end(bytes);
      return;
    }
    for (let offset = 0; offset < bytes.length; offset += size) {
      if (response.destroyed) return;
      response.write(bytes.subarray(offset, offset + size));
      const waited = behaviour.pieceDelayMs === undefined ? await turn() : await pause(behaviour.pieceDelayMs, response);
      if (!waited) return;
    }
    response.end();
  }

  /** Waits `ms`; false when the response or the server went away meanwhile. */
  async function pause(ms: number, response: ServerResponse): Promise<boolean> {
    if (ms > 0) {
      try {
        await sleep(ms, undefined, { signal: lifetime.signal });
      } catch {
        return false;
      }
    }
    return !response.destroyed && !lifetime.signal.aborted;
  }

  async function turn(): Promise<boolean> {
    await nextTurn();
    return !lifetime.signal.aborted;
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  let closing: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    next: (...behaviours) => void queue.push(...behaviours),
    setDefault: (behaviour) => void (fallback = behaviour),
    close: () => {
      closing ??= (async () => {
        lifetime.abort();
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        // Resolve only once every connection has closed, so `closedAt` is set for all requests.
        const closed = [...sockets].map((socket) => new Promise<void>((resolve) => {
          if (socket.closed) resolve();
          else socket.once("close", () => resolve());
        }));
        for (const socket of sockets) socket.destroy();
        server.closeAllConnections();
        await Promise.all([stopped, ...closed]);
      })();
      return closing;
    },
  };
}

/** One entry of test/fixtures/upstream/manifest.json. */
export interface UpstreamFixture {
  readonly file: string;
  readonly server: "vllm" | "sglang" | "tgi" | "ollama" | "llamacpp";
  readonly kind: "stream" | "json" | "error";
  readonly status: number;
  readonly contentType: string;
  readonly expect: FixtureExpectation | { readonly upstreamMessage: string };
}

/** What a normaliser must extract from a successful transcript; `null` where it carries none. */
export interface FixtureExpectation {
  readonly content: string;
  readonly finishReason: "stop" | "length";
  readonly promptTokens: number | null;
  readonly completionTokens: number | null;
  readonly cachedTokens: number | null;
  /** vLLM `stop_reason` / SGLang `matched_stop`: a stop string, or the token id that stopped. */
  readonly stopReason: string | number | null;
}

let manifest: Promise<UpstreamFixture[]> | undefined;

export function readManifest(): Promise<UpstreamFixture[]> {
  manifest ??= readFile(path.join(UPSTREAM_FIXTURES_DIR, "manifest.json"), "utf8").then(
    (text) => JSON.parse(text) as UpstreamFixture[],
  );
  return manifest;
}

// ---------------------------------------------------------------------------------------------

interface ChatRequest {
  readonly model?: string;
  readonly messages: readonly unknown[];
  readonly stream?: boolean;
  readonly stream_options?: { readonly include_usage?: boolean };
  readonly max_tokens?: number;
  readonly max_completion_tokens?: number;
}

function isChatRequest(body: unknown): body is ChatRequest {
  return typeof body === "object" && body !== null && Array.isArray((body as { messages?: unknown }).messages);
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    request.on("data", (part: Buffer) => parts.push(part));
    request.once("end", () => resolve(Buffer.concat(parts).toString("utf8")));
    request.once("error", reject);
  });
}

function parseBody(raw: string): unknown {
  if (raw.length === 0) return undefined;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/** vLLM's flat error body (before it moved to `{ "error": { ... } }`). */
function vllmError(message: string): unknown {
  return { object: "error", message, type: "BadRequestError", param: null, code: 400 };
}

function chunk(id: string, model: string, delta: Record<string, string>, finishReason: string | null): unknown {
  return {
    id,
    object: "chat.completion.chunk",
    created: nowSeconds(),
    model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  };
}

function sseEvent(data: unknown): string {
  return `data: ${JSON.stringify(data)}\n\n`;
}

/** Word-sized pieces that keep their leading space, e.g. "Hello!", " How", " can". */
function splitTokens(text: string): string[] {
  return text.match(/\s*\S+|\s+$/g) ?? [];
}

function estimatePromptTokens(body: ChatRequest): number {
  const characters = JSON.stringify(body.messages).length;
  return Math.max(1, Math.ceil(characters / 4));
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function contentTypeOf(file: string): string {
  return file.endsWith(".sse") ? "text/event-stream" : "application/json";
}

/** Resolves once everything written so far has been handed to the socket. */
function writesFlushed(response: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    if (response.destroyed) resolve();
    else response.write("", () => resolve());
  });
}

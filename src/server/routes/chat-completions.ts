/**
 * `POST /v1/chat/completions` and the seed's `POST /model/api/v1/chat/completions`,
 * in the order of DESIGN §2: (1–2 in hooks) → 3 validate → 4 resolve the model →
 * 5 admit (key limits, then the backend's queue) → 6 prepare → wait for the engine →
 * 7 generate → 8 respond → 9 account. Everything up to the engine's first event happens
 * before any response byte.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { AccessControl } from "../../access/access-control.js";
import type { Generation } from "../../backends/backend.js";
import type { ModelRegistry } from "../../backends/registry.js";
import { parseChatRequest, type ChatRequest } from "../../protocol/chat-request.js";
import {
  buildCompletion,
  buildContentChunk,
  buildFinishChunk,
  buildRoleChunk,
  buildUsageChunk,
  type CompletionIdentity,
} from "../../protocol/chat-response.js";
import { ApiError, toApiError } from "../../protocol/errors.js";
import { newCompletionId } from "../../protocol/ids.js";
import type { ParameterRanges } from "../../protocol/parameters.js";
import type { Metrics } from "../../telemetry/metrics.js";
import type { InFlight, InFlightRequest } from "../in-flight.js";
import { RequestAccounting } from "../request-accounting.js";
import { SseWriter } from "../sse.js";

export interface ChatRouteOptions {
  readonly registry: ModelRegistry;
  readonly ranges: ParameterRanges;
  readonly access: AccessControl;
  readonly inFlight: InFlight;
  readonly metrics: Metrics;
}

const SHUTDOWN_MESSAGE = "The server is shutting down: this response was cut short at the drain deadline.";

/**
 * What stops a generation: the client going away before the response is complete, or the
 * server stopping the request at the drain deadline (`shutdown`). One controller with two
 * listeners rather than `AbortSignal.any`, which is slow in Node 20 and leaves weak
 * references for the collector.
 */
class Cancellation {
  readonly #controller = new AbortController();
  readonly signal: AbortSignal = this.#controller.signal;
  /** The client went away before the response was complete. */
  disconnected = false;

  constructor(reply: FastifyReply, shutdown: AbortSignal) {
    reply.raw.on("close", () => {
      if (reply.raw.writableFinished) return;
      this.disconnected = true;
      this.#controller.abort(new Error("client disconnected"));
    });
    if (shutdown.aborted) this.#controller.abort(shutdown.reason);
    else shutdown.addEventListener("abort", () => this.#controller.abort(shutdown.reason), { once: true });
  }
}

export function registerChatCompletionRoutes(app: FastifyInstance, options: ChatRouteOptions): void {
  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const accounting = new RequestAccounting(request, options.access, options.metrics);
    let flight: InFlightRequest | undefined;
    try {
      flight = options.inFlight.begin();
      await serveChatCompletion(request, reply, options, accounting, flight.signal);
    } catch (error) {
      const apiError = toApiError(error);
      if (accounting.outcome === "stopped") accounting.stopped(apiError.status);
      else accounting.failed(apiError);
      if (!(error instanceof ApiError)) request.log.error({ err: error }, "chat completion failed");
      throw apiError;
    } finally {
      await accounting.finish();
      flight?.end(); // after the ledger row, so a drain waits for it
    }
  };
  // A body refused while it is parsed (400 bad JSON, 413, 415) never reaches the handler;
  // once the caller is authenticated it still leaves its ledger row, before the error is sent.
  const onSend = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (request.accounted || request.principal === null) return;
    const accounting = new RequestAccounting(request, options.access, options.metrics);
    accounting.answered(reply.statusCode);
    await accounting.finish();
  };
  app.post("/v1/chat/completions", { onSend }, handler);
  app.post("/model/api/v1/chat/completions", { onSend }, handler);
}

async function serveChatCompletion(
  request: FastifyRequest,
  reply: FastifyReply,
  options: ChatRouteOptions,
  accounting: RequestAccounting,
  shutdown: AbortSignal,
): Promise<void> {
  const body = parseChatRequest(request.body, options.ranges);
  const principal = request.principal ?? { key: null };
  const backend = options.registry.resolve(body.model);
  accounting.model = body.model;
  options.access.checkModel(principal, body.model);
  const admitted = await options.access.admit(principal, body.maxTokens, request.id);
  accounting.lease = admitted.lease;
  void reply.headers(admitted.headers);
  const admission = backend.admit(principal.key?.id ?? "");
  const cancellation = new Cancellation(reply, shutdown);
  try {
    const prepared = await backend.prepare(body, request.id);
    accounting.tokens = { promptTokens: prepared.promptTokens, completionTokens: 0, cachedTokens: 0 };
    const generation = await admission.start(prepared, cancellation.signal);
    try {
      const identity: CompletionIdentity = { id: newCompletionId(), created: Math.floor(Date.now() / 1000), model: body.model };
      if (body.stream) await streamCompletion(reply, request.id, identity, body, generation, accounting, admitted.headers);
      else await sendCompletion(reply, identity, generation, accounting);
      if (shutdown.aborted && !cancellation.disconnected && accounting.outcome === "completed" && !reply.sent) {
        // Stopped at the drain deadline before a non-streamed answer was ready.
        accounting.stopped(503);
        throw new ApiError("server_shutting_down", SHUTDOWN_MESSAGE);
      }
    } finally {
      if (accounting.outcome !== "completed" || cancellation.disconnected) accounting.tokens = generation.usage();
      await generation.close();
    }
    if (cancellation.disconnected && accounting.outcome !== "failed") accounting.abandoned();
  } catch (error) {
    if (cancellation.disconnected) {
      accounting.abandoned();
      return;
    }
    if (shutdown.aborted && accounting.outcome === "completed") {
      accounting.stopped(503);
      throw new ApiError("server_shutting_down", SHUTDOWN_MESSAGE);
    }
    throw error;
  } finally {
    admission.release();
  }
}

async function sendCompletion(
  reply: FastifyReply,
  identity: CompletionIdentity,
  generation: Generation,
  accounting: RequestAccounting,
): Promise<void> {
  let content = "";
  for await (const event of generation) {
    if (event.type === "delta") {
      accounting.markDelta();
      content += event.text;
      continue;
    }
    accounting.completed(event.finishReason, event);
    const body = buildCompletion(identity, content, event.finishReason, event.stopReason, event);
    await accounting.commit(); // the ledger row is durable before the body is sent
    await reply.send(body);
    await accounting.finish(); // metrics and the log line, after the body
    return;
  }
  // The generation ended without a finish event: the client went away.
}

async function streamCompletion(
  reply: FastifyReply,
  requestId: string,
  identity: CompletionIdentity,
  body: ChatRequest,
  generation: Generation,
  accounting: RequestAccounting,
  headers: Record<string, string>,
): Promise<void> {
  // The first event is awaited before the 200 is written, so a failure here is still a plain error response.
  const iterator = generation[Symbol.asyncIterator]();
  let next = await iterator.next();
  reply.hijack();
  const sse = new SseWriter(reply.raw, requestId, headers);
  try {
    await sse.send(buildRoleChunk(identity));
    while (next.done !== true) {
      const event = next.value;
      if (event.type === "delta") {
        accounting.markDelta();
        await sse.send(buildContentChunk(identity, event.text));
      } else {
        accounting.completed(event.finishReason, event);
        sse.hold(); // the end of the answer leaves with [DONE], in one write after the commit
        await sse.send(buildFinishChunk(identity, event.finishReason, event.stopReason));
        if (body.includeUsage) await sse.send(buildUsageChunk(identity, event));
        await accounting.commit(); // the ledger row is durable before [DONE]
        await sse.done();
        await accounting.finish(); // metrics and the log line, after the last byte
        return;
      }
      if (!sse.open) return;
      next = await iterator.next();
    }
    if (sse.open) {
      // The generation ended without a finish event while the client is still here: the
      // server stopped it (shutdown deadline).
      accounting.stopped(200);
      await sse.send(new ApiError("server_shutting_down", SHUTDOWN_MESSAGE).toBody());
      await sse.done();
    }
  } catch (error) {
    // After the first byte the status is sent: report the failure in-stream, then end it.
    const apiError = error instanceof ApiError ? error : new ApiError("generation_failed", "The model failed while generating this response.");
    accounting.failedMidStream();
    reply.log.error({ err: error }, "generation failed mid-stream");
    await sse.send(apiError.toBody());
    await sse.done();
  }
}

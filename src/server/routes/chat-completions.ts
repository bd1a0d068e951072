/**
 * `POST /v1/chat/completions` and the seed's `POST /model/api/v1/chat/completions`,
 * in the order of DESIGN §2: (1–2 in hooks) → 3 validate → 4 resolve the model →
 * 5 admit → 6 prepare → wait for the engine → 7 generate → 8 respond → 9 account.
 * Everything up to the engine's first event happens before any response byte.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Generation, GenerationRequest } from "../../backends/backend.js";
import type { ModelRegistry } from "../../backends/registry.js";
import { parseChatRequest, type ChatRequest } from "../../protocol/chat-request.js";
import {
  buildCompletion,
  buildContentChunk,
  buildFinishChunk,
  buildRoleChunk,
  buildUsageChunk,
  type CompletionIdentity,
  type FinishReason,
  type TokenCounts,
} from "../../protocol/chat-response.js";
import { ApiError, toApiError } from "../../protocol/errors.js";
import { newCompletionId } from "../../protocol/ids.js";
import type { ParameterRanges } from "../../protocol/parameters.js";
import { SseWriter } from "../sse.js";

export interface ChatRouteOptions {
  readonly registry: ModelRegistry;
  readonly ranges: ParameterRanges;
}

/** What stage 9 records of one request, whatever its outcome. */
interface Outcome {
  model: string | null;
  status: number;
  finishReason: FinishReason | "abandoned" | "error" | null;
  counts: TokenCounts | null;
  timeToFirstTokenMs: number | null;
}

function toGenerationRequest(request: ChatRequest): GenerationRequest {
  return {
    messages: request.messages,
    temperature: request.temperature,
    topP: request.topP,
    maxTokens: request.maxTokens,
    presencePenalty: request.presencePenalty,
    frequencyPenalty: request.frequencyPenalty,
    stop: request.stop,
    seed: request.seed,
  };
}

/** Aborts when the client goes away before the response is complete. */
function abortOnDisconnect(reply: FastifyReply): AbortController {
  const controller = new AbortController();
  reply.raw.on("close", () => {
    if (!reply.raw.writableFinished) controller.abort(new Error("client disconnected"));
  });
  return controller;
}

export function registerChatCompletionRoutes(app: FastifyInstance, options: ChatRouteOptions): void {
  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const started = performance.now();
    const outcome: Outcome = { model: null, status: 200, finishReason: null, counts: null, timeToFirstTokenMs: null };
    try {
      await serveChatCompletion(request, reply, options, outcome, started);
    } catch (error) {
      const apiError = toApiError(error);
      outcome.status = apiError.status;
      outcome.finishReason = "error";
      if (!(error instanceof ApiError)) request.log.error({ err: error }, "chat completion failed");
      throw apiError;
    } finally {
      request.accounted = true;
      request.log.info(
        {
          route: request.url,
          model: outcome.model,
          status: outcome.status,
          finishReason: outcome.finishReason,
          promptTokens: outcome.counts?.promptTokens ?? null,
          completionTokens: outcome.counts?.completionTokens ?? null,
          timeToFirstTokenMs: outcome.timeToFirstTokenMs,
          durationMs: Math.round(performance.now() - started),
        },
        "chat completion",
      );
    }
  };
  app.post("/v1/chat/completions", handler);
  app.post("/model/api/v1/chat/completions", handler);
}

async function serveChatCompletion(
  request: FastifyRequest,
  reply: FastifyReply,
  options: ChatRouteOptions,
  outcome: Outcome,
  started: number,
): Promise<void> {
  const body = parseChatRequest(request.body, options.ranges);
  const backend = options.registry.resolve(body.model);
  outcome.model = body.model;
  const admission = backend.admit();
  const disconnect = abortOnDisconnect(reply);
  try {
    const prepared = await backend.prepare(toGenerationRequest(body));
    const generation = await admission.start(prepared, disconnect.signal);
    try {
      const identity: CompletionIdentity = { id: newCompletionId(), created: Math.floor(Date.now() / 1000), model: body.model };
      const markFirstToken = (): void => {
        outcome.timeToFirstTokenMs ??= Math.round(performance.now() - started);
      };
      if (body.stream) await streamCompletion(reply, request.id, identity, body, generation, outcome, markFirstToken);
      else await sendCompletion(reply, identity, generation, outcome, markFirstToken);
      if (disconnect.signal.aborted && outcome.finishReason === null) outcome.finishReason = "abandoned";
    } finally {
      await generation.close();
    }
  } catch (error) {
    if (disconnect.signal.aborted) {
      outcome.finishReason = "abandoned";
      outcome.status = 499;
      return;
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
  outcome: Outcome,
  markFirstToken: () => void,
): Promise<void> {
  let content = "";
  for await (const event of generation) {
    if (event.type === "delta") {
      markFirstToken();
      content += event.text;
      continue;
    }
    outcome.finishReason = event.finishReason;
    outcome.counts = event;
    await reply.send(buildCompletion(identity, content, event.finishReason, event.stopReason, event));
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
  outcome: Outcome,
  markFirstToken: () => void,
): Promise<void> {
  // The first event is awaited before the 200 is written, so a failure here is still a plain error response.
  const iterator = generation[Symbol.asyncIterator]();
  let next = await iterator.next();
  reply.hijack();
  const sse = new SseWriter(reply.raw, requestId);
  try {
    await sse.send(buildRoleChunk(identity));
    while (next.done !== true) {
      const event = next.value;
      if (event.type === "delta") {
        markFirstToken();
        await sse.send(buildContentChunk(identity, event.text));
      } else {
        outcome.finishReason = event.finishReason;
        outcome.counts = event;
        await sse.send(buildFinishChunk(identity, event.finishReason, event.stopReason));
        if (body.includeUsage) await sse.send(buildUsageChunk(identity, event));
        await sse.done();
        return;
      }
      if (!sse.open) return;
      next = await iterator.next();
    }
  } catch (error) {
    // After the first byte the status is sent: report the failure in-stream, then end it.
    const apiError = error instanceof ApiError ? error : new ApiError("generation_failed", "The model failed while generating this response.");
    outcome.finishReason = "error";
    outcome.status = apiError.status;
    reply.log.error({ err: error }, "generation failed mid-stream");
    await sse.send(apiError.toBody());
    await sse.done();
  }
}

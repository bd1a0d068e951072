/**
 * A model served by a pool of OpenAI-compatible servers (vLLM, SGLang, TGI, llama-server,
 * Ollama, other Parleys): Parley is the front door — keys, limits, ledger, the seed's exact
 * response — and the upstreams generate.
 *
 * Each request goes to one upstream chosen by the pool's balancing policy. Until the first
 * text arrives nothing has reached the client, so a failed attempt (refused, reset, timed
 * out, 5xx, 429 with a short Retry-After, a broken stream) is retried on another upstream in
 * rotation, up to `max_attempts` and within the pool's retry budget. After the first text,
 * never: the route ends the stream with an error event and `[DONE]`.
 */
import type { Dispatcher } from "undici";
import type { UpstreamModelConfig } from "../../config/model-file.js";
import type { UpstreamGaugeSource } from "../../telemetry/metrics.js";
import type { ModelRegistry } from "../registry.js";
import { ApiError } from "../../protocol/errors.js";
import type { Admission, Backend, BackendState, Generation, GenerationEvent, GenerationRequest, ModelInfo, PreparedPrompt } from "../backend.js";
import { createBalancer, type Balancer, type RoutedPrompt } from "./balancer.js";
import { readCompletion } from "./normalise.js";
import { prefixBlocks, promptText } from "./prefix-index.js";
import { RetryBudget } from "./retry-budget.js";
import { readSseData } from "./sse-reader.js";
import { UpstreamCall, type PhaseDeadline } from "./upstream-call.js";
import { classifyError, statusFailure, transportFailure, UpstreamFailure } from "./upstream-failure.js";
import { finishEvent, StreamState, UpstreamGeneration } from "./upstream-generation.js";
import { UpstreamServer, type UpstreamView } from "./upstream-server.js";

interface UpstreamPrompt extends PreparedPrompt, RoutedPrompt {
  readonly body: string;
  /** Sent upstream as `x-request-id`, so one id follows a request through both servers' logs. */
  readonly requestId: string | undefined;
  readonly stream: boolean;
  readonly stop: readonly string[];
}

/** Characters per token when estimating a prompt the upstream will count exactly later. */
const CHARS_PER_TOKEN = 4;
/** Largest error or non-streamed body read from an upstream. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

const NO_FIRST_TOKEN: PhaseDeadline = (ms) => `no first token within ${ms} ms`;
const NO_ANSWER: PhaseDeadline = (ms) => `no answer within ${ms} ms`;

export interface UpstreamPoolView {
  readonly model: string;
  readonly names: readonly string[];
  readonly upstream_model: string;
  readonly balancing: string;
  readonly in_flight: number;
  readonly upstreams: readonly UpstreamView[];
}

async function readText(body: Dispatcher.ResponseData["body"], limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new UpstreamFailure("protocol", "response too large", true, true, new ApiError("upstream_error", "The upstream inference server sent a response too large to read."));
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

export class UpstreamBackend implements Backend {
  readonly info: ModelInfo;
  readonly names: readonly string[];
  readonly #config: UpstreamModelConfig;
  readonly #servers: UpstreamServer[];
  readonly #balancer: Balancer;
  readonly #budget: RetryBudget;
  #timer: NodeJS.Timeout | undefined;
  #disposed = false;

  constructor(config: UpstreamModelConfig) {
    this.#config = config;
    this.names = config.names;
    this.info = { id: config.names[0] ?? config.upstreamModel, created: Math.floor(Date.now() / 1000), ownedBy: "parley-upstream" };
    this.#servers = config.upstreams.map((server) => new UpstreamServer(server, config.timeouts, config.health));
    this.#balancer = createBalancer(config.balancing, config.prefixAffinity);
    this.#budget = new RetryBudget(config.retries.budgetRatio, config.retries.minPerSecond);
  }

  /** Starts active health checks (one now, then every `interval_ms`). */
  start(): void {
    if (this.#config.health.intervalMs === 0 || this.#timer !== undefined) return;
    const checkAll = () => {
      for (const server of this.#servers) void server.check();
    };
    checkAll();
    this.#timer = setInterval(checkAll, this.#config.health.intervalMs);
    this.#timer.unref();
  }

  /** Ready while at least one upstream is in rotation or due a trial. */
  state(): BackendState {
    if (this.#disposed) return "disposed";
    return this.#servers.some((server) => server.breaker.state() !== "open") ? "ready" : "failed";
  }

  activity(): { running: number; waiting: number } {
    return { running: this.#servers.reduce((sum, server) => sum + server.inFlight, 0), waiting: 0 };
  }

  view(): UpstreamPoolView {
    const now = Date.now();
    return {
      model: this.info.id,
      names: this.names,
      upstream_model: this.#config.upstreamModel,
      balancing: this.#config.balancing,
      in_flight: this.activity().running,
      upstreams: this.#servers.map((server) => server.view(now)),
    };
  }

  admit(): Admission {
    if (this.#disposed) throw new ApiError("model_unavailable", `The model '${this.info.id}' is no longer served.`);
    const now = Date.now();
    if (!this.#servers.some((server) => server.available(now))) throw this.#noneAvailable(now);
    if (this.activity().running >= this.#config.maxOutstanding) {
      throw new ApiError("server_overloaded", `The model '${this.info.id}' has ${this.#config.maxOutstanding} requests in flight, its limit; retry shortly.`);
    }
    return { start: (prepared, signal) => this.#start(prepared as UpstreamPrompt, signal), release: () => {} };
  }

  async prepare(request: GenerationRequest, requestId?: string): Promise<PreparedPrompt> {
    const text = promptText(request.messages);
    const body: Record<string, unknown> = {
      model: this.#config.upstreamModel,
      messages: request.messages.map((message) => ({ role: message.role, content: message.content })),
      temperature: request.temperature,
      top_p: request.topP,
      max_tokens: request.maxTokens,
      presence_penalty: request.presencePenalty,
      frequency_penalty: request.frequencyPenalty,
      stream: request.stream,
    };
    if (request.stop.length > 0) body.stop = request.stop;
    if (request.seed !== undefined) body.seed = request.seed;
    // Always ask for usage: the ledger wants the upstream's exact counts.
    if (request.stream) body.stream_options = { include_usage: true };
    const prompt: UpstreamPrompt = {
      promptTokens: Math.ceil(text.length / CHARS_PER_TOKEN),
      body: JSON.stringify(body),
      requestId,
      stream: request.stream,
      stop: request.stop,
      blocks: this.#config.balancing === "prefix_affinity" ? prefixBlocks(text, this.#config.prefixAffinity.blockChars) : [],
      chars: text.length,
    };
    return prompt;
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    clearInterval(this.#timer);
    await Promise.all(this.#servers.map((server) => server.close()));
  }

  /**
   * Why no upstream can take a request now: every one in rotation asked to be left alone
   * by a 429 (503 `server_overloaded`, until the first of them is free again), or they are
   * ejected (503 `model_unavailable`, until the first is due a trial).
   */
  #noneAvailable(now: number): ApiError {
    const retryAfter = (until: number) => Math.max(1, Math.ceil((until - now) / 1000));
    const inRotation = this.#servers.filter((server) => server.breaker.state(now) !== "open");
    const cooling = inRotation.map((server) => server.coolingUntil(now)).filter((until): until is number => until !== null);
    if (inRotation.length > 0 && cooling.length === inRotation.length) {
      return new ApiError("server_overloaded", `Every upstream server of the model '${this.info.id}' asked for a pause (HTTP 429); retry after the time in Retry-After.`, {
        retryAfterSeconds: retryAfter(Math.min(...cooling)),
      });
    }
    const next = Math.min(...this.#servers.map((server) => server.breaker.retryAt(now) ?? now + 1000));
    return new ApiError("model_unavailable", `No upstream server of the model '${this.info.id}' is available right now.`, {
      retryAfterSeconds: retryAfter(next),
    });
  }

  async #start(prompt: UpstreamPrompt, signal: AbortSignal): Promise<Generation> {
    const tried = new Set<UpstreamServer>();
    let last: UpstreamFailure | undefined;
    this.#budget.request();
    for (let attempt = 1; attempt <= this.#config.retries.maxAttempts; attempt++) {
      const now = Date.now();
      const candidates = this.#servers.filter((server) => !tried.has(server) && server.available(now));
      const server = this.#balancer.choose(candidates, prompt);
      if (server === undefined) break;
      if (attempt > 1 && !this.#budget.tryRetry()) break;
      tried.add(server);
      try {
        const generation = await this.#attempt(server, prompt, signal);
        this.#balancer.served(server, prompt);
        return generation;
      } catch (error) {
        if (signal.aborted) throw error;
        if (!(error instanceof UpstreamFailure)) throw error;
        last = error;
        if (!error.retryable) break;
      }
    }
    throw last?.apiError ?? this.#noneAvailable(Date.now());
  }

  /** One try on one upstream: resolves once the first text (or the whole answer) is in hand. */
  async #attempt(server: UpstreamServer, prompt: UpstreamPrompt, signal: AbortSignal): Promise<Generation> {
    const { timeouts } = this.#config;
    const call = new UpstreamCall(signal, timeouts.totalMs);
    const startedAt = performance.now();
    let response: Dispatcher.ResponseData | undefined;
    let handedOver = false;
    server.begin();
    try {
      if (prompt.stream) call.phase(NO_FIRST_TOKEN, timeouts.firstTokenMs);
      else call.phase(NO_ANSWER, timeouts.totalMs);
      response = await server.post(prompt.body, call.signal, prompt.requestId);
      if (response.statusCode !== 200) {
        const text = await readText(response.body, MAX_BODY_BYTES);
        throw statusFailure(response.statusCode, text, response.headers["retry-after"], { secrets: server.secrets, maxRetryAfterMs: this.#config.retries.maxRetryAfterMs });
      }
      const state = new StreamState();
      const body = response.body;
      const common = { server, call, state, estimatedPromptTokens: prompt.promptTokens, stop: prompt.stop, idleMs: timeouts.idleMs, clientSignal: signal, destroy: () => body.destroy() };
      // A server that ignores `stream: true` and answers with one JSON body is read as such.
      const json = String(response.headers["content-type"] ?? "").includes("application/json");
      if (!prompt.stream || json) {
        const answer = readCompletion(await readText(body, MAX_BODY_BYTES));
        state.finishReason = answer.finishReason;
        state.matchedStop = answer.matchedStop;
        state.usage = answer.usage;
        state.textChunks = answer.text === "" ? 0 : 1;
        state.done = true;
        const ready: GenerationEvent[] = answer.text === "" ? [] : [{ type: "delta", text: answer.text }];
        ready.push(finishEvent(state, prompt.promptTokens, prompt.stop));
        server.succeeded(performance.now() - startedAt);
        handedOver = true;
        return new UpstreamGeneration({ ...common, ready, rest: undefined });
      }
      // Read up to the first text, or to the end of an answer that has none; a failure
      // here is still invisible to the client, so another upstream may be tried.
      const rest = readSseData(body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
      const ready: GenerationEvent[] = [];
      while (ready.length === 0) {
        const next = await rest.next();
        if (next.done === true) {
          if (state.finishReason === null && !state.done) throw transportFailure("reset", "the stream ended before any answer");
          break;
        }
        const text = state.read(next.value, server.secrets);
        if (text !== "") ready.push({ type: "delta", text });
        else if (state.done) break;
      }
      server.succeeded(performance.now() - startedAt);
      handedOver = true;
      if (ready.length === 0) {
        // An empty answer ([DONE] before any text): complete as it is.
        ready.push(finishEvent(state, prompt.promptTokens, prompt.stop));
      }
      return new UpstreamGeneration({ ...common, ready, rest });
    } catch (error) {
      if (signal.aborted) {
        server.breaker.settle();
        throw error;
      }
      const failure = classifyError(error, call.timedOut);
      server.failed(failure.message, failure.unhealthy, failure.retryAfterMs);
      throw failure;
    } finally {
      if (!handedOver) {
        response?.body.destroy();
        call.dispose();
        server.end();
      }
    }
  }
}

/** The models of `registry` that are upstream pools. */
export function upstreamPools(registry: ModelRegistry): UpstreamBackend[] {
  return registry.backends().filter((backend): backend is UpstreamBackend => backend instanceof UpstreamBackend);
}

/** Every upstream server of every pool in `registry`, for the Prometheus gauges. */
export function upstreamGauges(registry: ModelRegistry): UpstreamGaugeSource[] {
  return upstreamPools(registry).flatMap((backend) =>
      backend.view().upstreams.map((server, index) => ({
        model: backend.info.id,
        upstream: String(index),
        state: server.state,
        inFlight: server.in_flight,
        requests: server.requests,
        failures: server.failures,
      })),
    );
}

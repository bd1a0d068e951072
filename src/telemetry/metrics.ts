/**
 * Prometheus metrics (prom-client, on a registry of Parley's own): requests by route,
 * model and status; request duration, time to first token and inter-token latency;
 * prompt, completion and cached tokens; and, read at scrape time, queue depth, busy and
 * free sequences, in-flight requests, each model's load state, how the embedded engine runs,
 * and each upstream server's breaker state and traffic. Labels take only route patterns,
 * served model names, upstream positions and the engine's settings, so their cardinality
 * stays bounded.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { BackendState } from "../backends/backend.js";
import type { EngineInfo } from "../backends/local/llama-tuning.js";

export interface ModelGaugeSource {
  readonly id: string;
  readonly state: BackendState;
  readonly running: number;
  readonly waiting: number;
  readonly sequences: { readonly busy: number; readonly free: number } | null;
  /** A loaded local model's engine context; null elsewhere. */
  readonly engine: { readonly flashAttention: boolean | "auto" } | null;
}

export interface ChatObservation {
  readonly route: string;
  readonly model: string | null;
  readonly status: number;
  readonly durationMs: number;
  readonly timeToFirstTokenMs: number | null;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedTokens: number;
}

/** One upstream server of a pool, as the gauges read it (see backends/upstream). */
export interface UpstreamGaugeSource {
  readonly model: string;
  /** Its position in the pool's config, "0", "1", …: /metrics needs no auth, so no addresses. */
  readonly upstream: string;
  readonly state: "closed" | "open" | "half_open";
  readonly inFlight: number;
  readonly requests: number;
  readonly failures: number;
}

const BREAKER_STATES = ["closed", "open", "half_open"] as const;

const STATES: readonly BackendState[] = ["loading", "ready", "failed", "disposed"];
/** Seconds: from sub-millisecond overheads to multi-minute generations. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5];

export class Metrics {
  readonly registry = new Registry();
  readonly #requests: Counter<"route" | "model" | "status">;
  readonly #duration: Histogram<"route" | "model">;
  readonly #ttft: Histogram<"model">;
  readonly #interToken: Histogram<"model">;
  readonly #tokens: Counter<"model" | "kind">;

  constructor(
    models: () => readonly ModelGaugeSource[],
    inFlight: () => number,
    upstreams: () => readonly UpstreamGaugeSource[] = () => [],
    engine: () => EngineInfo | null = () => null,
  ) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "parley_" });
    this.#requests = new Counter({ name: "parley_requests_total", help: "Requests answered, by route, model and HTTP status.", labelNames: ["route", "model", "status"], registers });
    this.#duration = new Histogram({ name: "parley_request_duration_seconds", help: "Time from a request's arrival to its last byte.", labelNames: ["route", "model"], buckets: DURATION_BUCKETS, registers });
    this.#ttft = new Histogram({ name: "parley_time_to_first_token_seconds", help: "Time from a chat request's arrival to its first generated text.", labelNames: ["model"], buckets: LATENCY_BUCKETS, registers });
    this.#interToken = new Histogram({ name: "parley_inter_token_latency_seconds", help: "Time between consecutive pieces of generated text.", labelNames: ["model"], buckets: LATENCY_BUCKETS, registers });
    this.#tokens = new Counter({ name: "parley_tokens_total", help: "Tokens by kind: prompt, completion, cached (prompt tokens reused from the KV cache).", labelNames: ["model", "kind"], registers });

    const gauge = (name: string, help: string, labelNames: string[], read: (set: (labels: Record<string, string>, value: number) => void) => void): void => {
      new Gauge({
        name, help, labelNames, registers,
        collect() {
          this.reset();
          read((labels, value) => this.set(labels, value));
        },
      });
    };
    gauge("parley_queue_depth", "Requests waiting for an engine sequence.", ["model"], (set) => {
      for (const model of models()) set({ model: model.id }, model.waiting);
    });
    gauge("parley_sequences", "Engine sequences, busy or free.", ["model", "state"], (set) => {
      for (const model of models()) {
        if (model.sequences === null) continue;
        set({ model: model.id, state: "busy" }, model.sequences.busy);
        set({ model: model.id, state: "free" }, model.sequences.free);
      }
    });
    gauge("parley_model_state", "1 for each model's current load state, 0 for the others.", ["model", "state"], (set) => {
      for (const model of models()) for (const state of STATES) set({ model: model.id, state }, model.state === state ? 1 : 0);
    });
    gauge("parley_model_attention_info", "1, labelled with the attention path each loaded local model's llama.cpp context was created with: flash_attention on, off, or auto (llama.cpp's own choice).", ["model", "flash_attention"], (set) => {
      for (const model of models()) {
        const setting = model.engine?.flashAttention;
        if (setting !== undefined) set({ model: model.id, flash_attention: setting === "auto" ? "auto" : setting ? "on" : "off" }, 1);
      }
    });
    gauge("parley_requests_in_flight", "Chat requests being served now (waiting or generating).", [], (set) => set({}, inFlight()));
    gauge("parley_engine_info", "1, labelled with how the embedded llama.cpp engine runs: its CPU kernels, decode loop and threadpool. Absent before a local model loads, or without Parley's tuning addon.", ["cpu_kernels", "decode_loop", "threadpool"], (set) => {
      const info = engine();
      if (info !== null) set({ cpu_kernels: info.cpuKernels, decode_loop: info.decodeLoop, threadpool: String(info.threadpool) }, 1);
    });
    gauge("parley_upstream_state", "1 for each upstream server's circuit-breaker state (closed: in rotation, open: ejected, half_open: due a trial).", ["model", "upstream", "state"], (set) => {
      for (const server of upstreams()) for (const state of BREAKER_STATES) set({ model: server.model, upstream: server.upstream, state }, server.state === state ? 1 : 0);
    });
    gauge("parley_upstream_in_flight", "Requests in flight to each upstream server.", ["model", "upstream"], (set) => {
      for (const server of upstreams()) set({ model: server.model, upstream: server.upstream }, server.inFlight);
    });
    gauge("parley_upstream_attempts", "Attempts sent to each upstream server since start, retries included.", ["model", "upstream"], (set) => {
      for (const server of upstreams()) set({ model: server.model, upstream: server.upstream }, server.requests);
    });
    gauge("parley_upstream_failures", "Failed attempts on each upstream server since start.", ["model", "upstream"], (set) => {
      for (const server of upstreams()) set({ model: server.model, upstream: server.upstream }, server.failures);
    });
  }

  observeRequest(route: string, status: number, durationMs: number, model: string | null = null): void {
    const labels = { route, model: model ?? "" };
    this.#requests.inc({ ...labels, status: String(status) });
    this.#duration.observe(labels, durationMs / 1000);
  }

  observeChat(observation: ChatObservation): void {
    const model = observation.model ?? "";
    this.observeRequest(observation.route, observation.status, observation.durationMs, observation.model);
    if (observation.timeToFirstTokenMs !== null) this.#ttft.observe({ model }, observation.timeToFirstTokenMs / 1000);
    this.#tokens.inc({ model, kind: "prompt" }, observation.promptTokens);
    this.#tokens.inc({ model, kind: "completion" }, observation.completionTokens);
    this.#tokens.inc({ model, kind: "cached" }, observation.cachedTokens);
  }

  observeInterToken(model: string, seconds: number): void {
    this.#interToken.observe({ model }, seconds);
  }
}

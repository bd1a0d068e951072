/**
 * The dashboard's live view of each served model: its state, requests running and
 * waiting, busy and free engine sequences, and tokens per second over the last few
 * seconds (sampled once a second from the backend's generated-token counter).
 *
 * Only what a backend exposes is shown: `generatedTokens`, `engine` and `failure` are
 * read where a backend has them (the local backend does), and are null elsewhere.
 */
import type { Backend, BackendState } from "../backends/backend.js";
import type { ModelRegistry } from "../backends/registry.js";
import { TokenRate } from "../telemetry/token-rate.js";

export interface ModelLoad {
  readonly id: string;
  /** Every name clients may send for this model, its id first. */
  readonly names: readonly string[];
  readonly state: BackendState;
  readonly failure: string | null;
  readonly running: number;
  readonly waiting: number;
  /** The engine's sequences; null for a backend without a local engine. */
  readonly sequences: { readonly total: number; readonly busy: number; readonly free: number } | null;
  readonly engine: EngineSettings | null;
  readonly generatedTokens: number | null;
  readonly tokensPerSecond: number | null;
}

export interface LiveLoadOptions {
  /** How often the token counters are sampled, in ms. Defaults to 1000. */
  readonly sampleEveryMs?: number;
  /** The window tokens per second are measured over, in ms. Defaults to 5000. */
  readonly windowMs?: number;
}

/** How a local model's engine context runs. */
export interface EngineSettings {
  readonly threads: number;
  readonly contextSize: number;
  readonly parallel: number;
  /** llama.cpp's flash attention: on, off, or its own choice ("auto"). */
  readonly flashAttention: boolean | "auto";
}

interface EngineView {
  readonly generatedTokens?: unknown;
  readonly engine?: EngineSettings | undefined;
  readonly failure?: unknown;
}

function tokenCount(backend: Backend): number | null {
  const value = (backend as EngineView).generatedTokens;
  return typeof value === "number" ? value : null;
}

export class LiveLoad {
  readonly #registry: ModelRegistry;
  readonly #options: LiveLoadOptions;
  readonly #rates = new Map<Backend, TokenRate>();
  #timer: NodeJS.Timeout | undefined;

  constructor(registry: ModelRegistry, options: LiveLoadOptions = {}) {
    this.#registry = registry;
    this.#options = options;
  }

  /** Starts sampling; idempotent. The timer never keeps the process alive. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#sampleAll();
    this.#timer = setInterval(() => this.#sampleAll(), this.#options.sampleEveryMs ?? 1000);
    this.#timer.unref();
  }

  /** Idempotent. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  snapshot(): ModelLoad[] {
    const names = new Map<Backend, string[]>();
    for (const [name, backend] of this.#registry.names()) names.set(backend, [...(names.get(backend) ?? []), name]);
    return this.#registry.backends().map((backend) => {
      const view = backend as EngineView;
      const { running, waiting } = backend.activity();
      const engine = view.engine ?? null;
      const generatedTokens = tokenCount(backend);
      const rate = this.#rate(backend);
      return {
        id: backend.info.id,
        names: names.get(backend) ?? [backend.info.id],
        state: backend.state(),
        failure: typeof view.failure === "string" ? view.failure : null,
        running,
        waiting,
        sequences: engine === null ? null : { total: engine.parallel, busy: running, free: Math.max(0, engine.parallel - running) },
        engine,
        generatedTokens,
        tokensPerSecond: rate === undefined ? null : rate.perSecond(),
      };
    });
  }

  #rate(backend: Backend): TokenRate | undefined {
    if (tokenCount(backend) === null) return undefined;
    let rate = this.#rates.get(backend);
    if (rate === undefined) {
      rate = new TokenRate(() => tokenCount(backend) ?? 0, { windowMs: this.#options.windowMs ?? 5000 });
      this.#rates.set(backend, rate);
    }
    return rate;
  }

  #sampleAll(): void {
    for (const backend of this.#registry.backends()) this.#rate(backend)?.sample();
  }
}

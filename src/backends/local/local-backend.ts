/**
 * A GGUF model served in-process by node-llama-cpp: one context with `parallel`
 * sequences (requests on different sequences decode together in one batch), behind a
 * bounded FIFO queue.
 */
import {
  resolveChatWrapper,
  type ChatWrapper,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import { ApiError } from "../../protocol/errors.js";
import type { Admission, Backend, BackendState, Generation, GenerationRequest, ModelInfo, PreparedPrompt } from "../backend.js";
import { DecodeLoop } from "./decode-loop.js";
import { commonPrefixLength, generate } from "./generate.js";
import { nativeLoopAddon, tuningStatus } from "./llama-tuning.js";
import type { FlashAttentionSetting } from "./attention-calibration.js";
import { createContextWithLoop } from "./native-decode-loop.js";
import { renderPrompt } from "./render-prompt.js";
import type { SequenceDecoder } from "./sequence-decoder.js";
import { SlotQueue } from "./slot-queue.js";
import { defaultThreads } from "./threads.js";

export interface LocalModelOptions {
  /** The model's id in `/v1/models` and in responses. */
  readonly id: string;
  readonly modelPath: string;
  /** Tokens each sequence can hold: prompt plus completion. Defaults to 4096 (capped at the model's training context). */
  readonly contextSize?: number | undefined;
  /** Sequences decoded together. Defaults to 1. */
  readonly parallel?: number | undefined;
  /** Requests that may wait for a sequence beyond those running. Defaults to 16 per sequence. */
  readonly queueSize?: number | undefined;
  /** Engine threads. Defaults to the measured rule in `threads.ts`. */
  readonly threads?: number | undefined;
  /** How long a request may wait for a sequence before a 503. Defaults to 120 s. */
  readonly queueTimeoutMs?: number | undefined;
  /**
   * llama.cpp's flash attention: on, off, or its own choice ("auto", the default). A promise
   * while `parley serve` is still measuring it (attention-calibration.ts).
   */
  readonly flashAttention?: FlashAttentionSetting | Promise<FlashAttentionSetting> | undefined;
}

export const DEFAULT_QUEUE_TIMEOUT_MS = 120_000;

interface LocalPrompt extends PreparedPrompt {
  readonly request: GenerationRequest;
  readonly tokens: readonly Token[];
  readonly templateStops: readonly string[];
}

interface Loaded {
  readonly model: LlamaModel;
  readonly context: LlamaContext;
  readonly chatWrapper: ChatWrapper;
  readonly queue: SlotQueue<LlamaContextSequence>;
  /** When each sequence last started a generation, for least-recently-used choices. */
  readonly lastUsed: Map<LlamaContextSequence, number>;
  /** Decodes every running sequence's next token in one batch per step. */
  readonly decoder: SequenceDecoder;
  /** Why the native loop is not used, or null when it is. */
  readonly whyLibraryLoop: string | null;
  /** What the context was created with. */
  readonly flashAttention: FlashAttentionSetting;
}

export const DEFAULT_CONTEXT_SIZE = 4096;

export class LocalBackend implements Backend {
  readonly info: ModelInfo;
  /** The engine, possibly still opening (`parley serve` measures CPU kernels first). */
  readonly #llama: Promise<Llama>;
  readonly #options: LocalModelOptions;
  #state: BackendState = "loading";
  #loaded: Loaded | undefined;
  #failure: string | undefined;
  #generatedTokens = 0;

  constructor(llama: Llama | Promise<Llama>, options: LocalModelOptions) {
    this.#llama = Promise.resolve(llama);
    this.#llama.catch(() => undefined); // a failure is reported by load()
    if (options.flashAttention instanceof Promise) options.flashAttention.catch(() => undefined); // likewise
    this.#options = options;
    this.info = { id: options.id, created: Math.floor(Date.now() / 1000), ownedBy: "parley" };
  }

  state(): BackendState {
    return this.#state;
  }

  activity(): { running: number; waiting: number } {
    const queue = this.#loaded?.queue;
    return { running: queue?.busy ?? 0, waiting: queue?.waiting ?? 0 };
  }

  /** Tokens generated since start, over all requests (abandoned ones included). */
  get generatedTokens(): number {
    return this.#generatedTokens;
  }

  /** Why loading failed, when `state()` is "failed". */
  get failure(): string | undefined {
    return this.#failure;
  }

  /** What the engine runs with, once loaded. */
  get engine():
    | { threads: number; contextSize: number; parallel: number; decodeLoop: "native" | "library"; flashAttention: FlashAttentionSetting; whyLibraryLoop?: string }
    | undefined {
    if (this.#loaded === undefined) return undefined;
    const { context, decoder, whyLibraryLoop, flashAttention } = this.#loaded;
    return {
      threads: context.currentThreads,
      contextSize: context.contextSize,
      parallel: context.totalSequences,
      decodeLoop: decoder.kind,
      flashAttention,
      ...(whyLibraryLoop === null ? {} : { whyLibraryLoop }),
    };
  }

  async load(): Promise<void> {
    try {
      const llama = await this.#llama;
      const model = await llama.loadModel({ modelPath: this.#options.modelPath });
      const parallel = this.#options.parallel ?? 1;
      const contextSize = Math.min(this.#options.contextSize ?? DEFAULT_CONTEXT_SIZE, model.trainContextSize);
      const tuning = tuningStatus();
      const threads = this.#options.threads ?? defaultThreads(model.size, llama.cpuMathCores, tuning.active && tuning.threadpool);
      const flashAttention = (await this.#options.flashAttention) ?? "auto";
      const { context, sequences, loop, why } = await createContextWithLoop(
        nativeLoopAddon(),
        () => model.createContext({ contextSize, sequences: parallel, threads, flashAttention }),
        parallel,
      );
      const queue = new SlotQueue(sequences, this.#options.queueSize ?? 16 * parallel);
      const decoder = loop ?? new DecodeLoop();
      this.#loaded = { model, context, chatWrapper: resolveChatWrapper(model), queue, lastUsed: new Map(), decoder, whyLibraryLoop: why, flashAttention };
      this.#state = this.#state === "disposed" ? "disposed" : "ready";
    } catch (error) {
      this.#failure = error instanceof Error ? error.message : String(error);
      this.#state = "failed";
      throw error;
    }
  }

  admit(owner = ""): Admission {
    const loaded = this.#ready();
    if (!loaded.queue.tryReserve()) {
      throw new ApiError("server_overloaded", `Model '${this.info.id}' is at capacity: too many requests are waiting. Retry shortly.`);
    }
    let open = true;
    return {
      start: async (prepared, signal) => {
        const prompt = prepared as LocalPrompt;
        const timeoutMs = this.#options.queueTimeoutMs ?? DEFAULT_QUEUE_TIMEOUT_MS;
        const timeout = AbortSignal.timeout(timeoutMs);
        const choose = (free: readonly LlamaContextSequence[]): number => this.#closestSequence(loaded, free, prompt.tokens);
        const slot = await loaded.queue.acquire(AbortSignal.any([signal, timeout]), choose, owner).catch(() => {
          if (timeout.aborted && !signal.aborted) {
            throw new ApiError("server_overloaded", `Model '${this.info.id}' is busy: the request waited ${timeoutMs / 1000} s for it. Retry shortly.`);
          }
          throw new ApiError("server_overloaded", "The request was abandoned while waiting for the model.");
        });
        open = false;
        return this.#run(loaded, slot, prompt, signal);
      },
      release: () => {
        if (open) loaded.queue.cancelReservation();
        open = false;
      },
    };
  }

  async prepare(request: GenerationRequest): Promise<PreparedPrompt> {
    const { model, chatWrapper, context } = this.#ready();
    const rendered = renderPrompt(chatWrapper, request.messages);
    let tokens = rendered.text.tokenize(model.tokenizer);
    // Some chat wrappers (ChatML) always open with BOS; a model that asks for no BOS
    // (Qwen2, whose BOS is <|endoftext|>) is prompted without it, as llama-server does.
    if (!model.tokens.shouldPrependBosToken && tokens[0] === model.tokens.bos) tokens = tokens.slice(1);
    const window = context.contextSize;
    if (tokens.length + request.maxTokens > window) {
      throw new ApiError(
        "context_length_exceeded",
        `This model's maximum context length is ${window} tokens. However, you requested ${tokens.length + request.maxTokens} tokens ` +
          `(${tokens.length} in the messages, ${request.maxTokens} in the completion). Please reduce the length of the messages or the completion.`,
        { param: "messages" },
      );
    }
    const prepared: LocalPrompt = { promptTokens: tokens.length, request, tokens, templateStops: rendered.templateStops };
    return prepared;
  }

  /**
   * Prefix affinity: of the free sequences, the one whose KV cache already holds the
   * longest prefix of this prompt (a multi-turn chat's earlier turns, a shared system
   * prompt). A match covering less than half the prompt (say, only the chat template's
   * opening) is not worth a cache someone else may return to: then the least recently
   * used sequence is taken instead.
   */
  #closestSequence(loaded: Loaded, free: readonly LlamaContextSequence[], tokens: readonly Token[]): number {
    let longest = 0;
    let longestShared = -1;
    let leastRecent = 0;
    free.forEach((sequence, index) => {
      const shared = commonPrefixLength(loaded.decoder.cachedTokens(sequence), tokens);
      if (shared > longestShared) {
        longest = index;
        longestShared = shared;
      }
      if ((loaded.lastUsed.get(sequence) ?? 0) < (loaded.lastUsed.get(free[leastRecent] as LlamaContextSequence) ?? 0)) leastRecent = index;
    });
    return longestShared * 2 >= tokens.length ? longest : leastRecent;
  }

  #run(loaded: Loaded, sequence: LlamaContextSequence, prompt: LocalPrompt, signal: AbortSignal): Generation {
    loaded.lastUsed.set(sequence, performance.now());
    const usage = { cachedTokens: 0, completionTokens: 0 };
    const input = {
      usage,
      request: prompt.request,
      promptTokens: prompt.tokens,
      templateStops: prompt.templateStops,
      onToken: () => {
        this.#generatedTokens += 1;
      },
    };
    const events = generate(loaded.model, loaded.decoder, sequence, input, signal);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      loaded.queue.release(sequence);
    };
    return {
      [Symbol.asyncIterator]: () => ({
        next: async () => {
          try {
            const result = await events.next();
            if (result.done === true) release();
            return result;
          } catch (error) {
            release();
            throw error;
          }
        },
      }),
      close: async () => {
        try {
          await events.return(undefined);
        } finally {
          release();
        }
      },
      usage: () => ({ promptTokens: prompt.promptTokens, ...usage }),
    };
  }

  #ready(): Loaded {
    if (this.#state === "loading") {
      throw new ApiError("model_loading", `Model '${this.info.id}' is still loading. Retry shortly.`);
    }
    if (this.#state !== "ready" || this.#loaded === undefined) {
      throw new ApiError("model_unavailable", `Model '${this.info.id}' is not available.`);
    }
    return this.#loaded;
  }

  async dispose(): Promise<void> {
    if (this.#state === "disposed") return;
    this.#state = "disposed";
    const loaded = this.#loaded;
    this.#loaded = undefined;
    if (loaded !== undefined) {
      loaded.decoder.close(); // before the context: the native loop's thread decodes on it
      await loaded.context.dispose();
      await loaded.model.dispose();
    }
  }
}

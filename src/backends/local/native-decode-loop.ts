/**
 * Parley's native decode loop (native/decode-loop.c), seen from JavaScript. A thread of the
 * addon decodes every running sequence of one context in one `llama_decode` per step and
 * samples each, as llama-server's slot loop does; each step's tokens arrive here in one call
 * and wait in their generation's queue until its reader takes them. node-llama-cpp still loads
 * the model, creates the context and tokenizes; it no longer evaluates.
 *
 * Why: node-llama-cpp's `evaluate` costs a decode call and one sampling call per sequence per
 * step, each a hop to a libuv worker and back; on small models those hops were most of a step
 * (docs/engine.md has the measurements).
 *
 * This side keeps each sequence's cached tokens (for prefix reuse), since the loop, not
 * node-llama-cpp, now fills the sequences' KV caches.
 */
import type { LlamaContext, LlamaContextSequence, Token } from "node-llama-cpp";
import type { NativeLoopAddon } from "./llama-tuning.js";
import { MAX_AHEAD, PENALTY_WINDOW, TOP_K, type Sampling, type SequenceDecoder } from "./sequence-decoder.js";

/** Event kinds and end reasons, as native/decode-loop.c numbers them. */
const EVENT_TOKEN = 0;
const END_ERROR = 3;

/** One generation's side of the loop: tokens the thread sampled, until its reader takes them. */
class Stream {
  /** The sequence's tokens: the prompt, then each sampled token. */
  readonly known: Token[];
  readonly queue: Token[] = [];
  /** Set once the loop said this generation ended (or the loop closed). */
  over = false;
  failure: Error | undefined;
  readonly ended: Promise<void>;
  #resolveEnded!: () => void;
  readonly #waiting: Array<() => void> = [];

  constructor(prompt: readonly Token[]) {
    this.known = [...prompt];
    this.ended = new Promise((resolve) => {
      this.#resolveEnded = resolve;
    });
  }

  push(token: Token): void {
    this.known.push(token);
    this.queue.push(token);
    this.#wake();
  }

  finish(failure?: Error): void {
    this.over = true;
    this.failure = failure;
    this.#resolveEnded();
    this.#wake();
  }

  /** Resolves at the next token or the end. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #wake(): void {
    for (const resolve of this.#waiting.splice(0)) resolve();
  }
}

export class NativeDecodeLoop implements SequenceDecoder {
  readonly kind = "native";
  readonly #addon: NativeLoopAddon;
  readonly #handle: object;
  /** Running generations by sequence id. */
  readonly #streams = new Map<number, Stream>();
  /** What each sequence's cache held when its last generation ended. */
  readonly #cached = new Map<number, readonly Token[]>();
  /** llama.cpp's id of each sequence. */
  readonly #ids: Map<LlamaContextSequence, number>;
  #closed = false;

  /**
   * Opens a loop on the `contextSerial`-th llama.cpp context created since start, whose
   * sequences are `sequences` in the order they were taken from the fresh context (so their
   * llama.cpp ids are 0, 1, …: see `createContextWithLoop`).
   */
  constructor(addon: NativeLoopAddon, contextSerial: number, sequences: readonly LlamaContextSequence[]) {
    this.#addon = addon;
    this.#ids = new Map(sequences.map((sequence, index) => [sequence, index]));
    this.#handle = addon.loopOpen(contextSerial, MAX_AHEAD, (events) => this.#dispatch(events));
  }

  #id(sequence: LlamaContextSequence): number {
    const id = this.#ids.get(sequence);
    if (id === undefined) throw new Error("This sequence does not belong to the native loop's context.");
    return id;
  }

  get active(): number {
    return this.#streams.size;
  }

  cachedTokens(sequence: LlamaContextSequence): readonly Token[] {
    return this.#cached.get(this.#id(sequence)) ?? [];
  }

  tokens(sequence: LlamaContextSequence, prompt: readonly Token[], reused: number, sampling: Sampling, limit: number): AsyncIterableIterator<Token> {
    const id = this.#id(sequence);
    let stream: Stream | undefined;
    let returned = false;
    const start = (): Stream => {
      if (this.#closed) throw new Error("The local engine is closed.");
      if (this.#streams.has(id)) throw new Error(`Sequence ${id} is still generating.`);
      const started = new Stream(prompt);
      this.#addon.loopStart(
        this.#handle,
        id,
        Int32Array.from(prompt),
        reused,
        limit,
        sampling.temperature,
        TOP_K,
        sampling.topP,
        sampling.seed ?? -1, // a uint32 already (chat-request.ts folds it); -1 asks for a random one
        sampling.presencePenalty,
        sampling.frequencyPenalty,
        PENALTY_WINDOW,
      );
      this.#streams.set(id, started);
      // While it runs, the cache holds the reused prefix and whatever is decoded after it.
      this.#cached.set(id, prompt.slice(0, reused));
      return started;
    };
    const iterator: AsyncIterableIterator<Token> = {
      next: async () => {
        if (returned) return { done: true, value: undefined };
        stream ??= start();
        for (;;) {
          if (returned) return { done: true, value: undefined };
          const token = stream.queue.shift();
          if (token !== undefined) {
            // Once over, the sequence may already serve another generation: no ack then.
            if (!stream.over) this.#addon.loopAck(this.#handle, id, 1);
            return { done: false, value: token };
          }
          if (stream.failure !== undefined) throw stream.failure;
          if (stream.over) return { done: true, value: undefined };
          await stream.changed();
        }
      },
      return: async () => {
        returned = true;
        if (stream !== undefined && !stream.over) {
          this.#addon.loopCancel(this.#handle, id);
          await stream.ended;
        }
        if (stream !== undefined) stream.queue.length = 0;
        return { done: true, value: undefined };
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** One step's events: (sequence, kind, token or end reason, cached positions) quadruples. */
  #dispatch(events: Int32Array): void {
    for (let index = 0; index + 3 < events.length; index += 4) {
      const id = events[index] as number;
      const stream = this.#streams.get(id);
      if (stream === undefined) continue;
      if (events[index + 1] === EVENT_TOKEN) {
        stream.push(events[index + 2] as Token);
        continue;
      }
      this.#streams.delete(id);
      this.#cached.set(id, stream.known.slice(0, events[index + 3]));
      stream.finish(
        events[index + 2] === END_ERROR
          ? new Error("llama.cpp could not decode this generation (its KV cache is full, the engine failed, or its context was freed).")
          : undefined,
      );
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#addon.loopClose(this.#handle);
    for (const stream of this.#streams.values()) stream.finish(new Error("The local engine closed while this generation was running."));
    this.#streams.clear();
    this.#cached.clear();
  }
}

/** One context creation at a time, so that the newest llama.cpp context is the one just created. */
let creating: Promise<unknown> = Promise.resolve();

/**
 * Creates a context and its `parallel` sequences through node-llama-cpp, and opens Parley's
 * native loop on it. Where the addon is not loaded (or the loop is turned off) the loop is
 * undefined and `why` says why.
 */
export async function createContextWithLoop(
  addon: NativeLoopAddon | undefined,
  create: () => Promise<LlamaContext>,
  parallel: number,
): Promise<{ context: LlamaContext; sequences: LlamaContextSequence[]; loop: NativeDecodeLoop | undefined; why: string | null }> {
  const created = creating.then(async () => {
    const before = addon?.contextSerial() ?? 0;
    const context = await create();
    // A fresh context hands out llama.cpp's sequence ids 0, 1, … in order.
    const sequences = Array.from({ length: parallel }, () => context.getSequence());
    if (addon === undefined) return { context, sequences, loop: undefined, why: "the native addon is not loaded, or the native loop is turned off" };
    // node-llama-cpp may make and free a trial context on the way (it does: two are created
    // per createContext); the one it kept is the one created since `before` still alive.
    const created = addon.liveContexts().filter((serial) => serial > before);
    const [serial] = created;
    if (serial === undefined || created.length > 1) {
      return { context, sequences, loop: undefined, why: `expected one new llama.cpp context, found ${created.length}` };
    }
    try {
      return { context, sequences, loop: new NativeDecodeLoop(addon, serial, sequences), why: null };
    } catch (error) {
      // E.g. a batch smaller than the sequences: the context still serves, through `evaluate`.
      return { context, sequences, loop: undefined, why: `the native loop could not open on this context: ${error instanceof Error ? error.message : String(error)}` };
    }
  });
  creating = created.catch(() => undefined);
  return created;
}

/**
 * The decode loop over node-llama-cpp's own `evaluate`, used where Parley's native loop
 * (native-decode-loop.ts) is not built or is turned off.
 *
 * Lockstep decoding across the sequences of one context: every generation that wants a
 * token asks its sequence's `evaluate()` generator for it in the same tick, so each queues
 * its decode before node-llama-cpp's batch dispatch (on its next cycle) and the context
 * decodes them all in one `llama_decode` per step, as llama-server's slot loop does.
 *
 * Why a loop at all: when each request's consumer pulls its own generator, the generators
 * resume at different moments (after their sample, after the HTTP write of their last
 * text), so one sequence always missed the batch in flight and the context decoded 3 of 4
 * sequences per step, then the straggler alone (measured: 4 streams no faster than 1; and
 * a batch of 3 is a slow shape for llama.cpp's kernels here). Here a step starts only when
 * every running generation has been given its result, and ends when all have a token.
 *
 * A generation whose reader falls behind by `MAX_AHEAD` tokens sits steps out, so a slow
 * client cannot make the others wait, nor run far ahead of what it reads. A new prompt's
 * prefill rides in the same batches but is not waited for by the step.
 */
import type { LlamaContextSequence, Token } from "node-llama-cpp";
import { MAX_AHEAD, PENALTY_WINDOW, TOP_K, type Sampling, type SequenceDecoder } from "./sequence-decoder.js";

/** How a generation samples: node-llama-cpp's `evaluate` options (temperature, top-p, seed, penalties). */
export type SamplingOptions = NonNullable<Parameters<LlamaContextSequence["evaluate"]>[1]>;

/** node-llama-cpp's sampling options for a request; penalties look at the last `PENALTY_WINDOW` generated tokens. */
export function samplingOptions(sampling: Sampling, generated: readonly Token[]): SamplingOptions {
  const penalize = sampling.presencePenalty !== 0 || sampling.frequencyPenalty !== 0;
  return {
    temperature: sampling.temperature,
    topK: TOP_K,
    topP: sampling.topP,
    ...(sampling.seed !== undefined ? { seed: sampling.seed } : {}),
    ...(penalize
      ? {
          repeatPenalty: {
            punishTokens: () => generated.slice(-PENALTY_WINDOW),
            maxPunishTokens: PENALTY_WINDOW,
            penalty: 1,
            presencePenalty: sampling.presencePenalty,
            frequencyPenalty: sampling.frequencyPenalty,
          },
        }
      : {}),
  };
}

/** One step's result: a token, the end of generation (the model's end-of-generation token), or a failure. */
type Outcome = { readonly token: Token } | { readonly end: true } | { readonly error: unknown };

class Participant {
  readonly #sequence: LlamaContextSequence;
  readonly #options: SamplingOptions;
  /** The sequence's own generator, made at the first step: one sampler for the whole generation. */
  #iterator: AsyncIterator<Token> | undefined;
  /** The part of the prompt to evaluate at the first step. */
  readonly #input: readonly Token[];
  #step = 0;
  #delivered = 0;
  readonly #limit: number;
  readonly #ready: Outcome[] = [];
  #waiting: ((outcome: Outcome | null) => void) | undefined;
  closed = false;
  /** This participant's evaluation in the step now running, if any. */
  #inFlight: Promise<unknown> | undefined;
  readonly #onRead: () => void;
  readonly #onSampled: (token: Token) => void;

  constructor(sequence: LlamaContextSequence, input: readonly Token[], options: SamplingOptions, limit: number, onRead: () => void, onSampled: (token: Token) => void) {
    this.#sequence = sequence;
    this.#onSampled = onSampled;
    this.#limit = limit;
    this.#input = input;
    this.#options = options;
    this.#onRead = onRead;
  }

  /** Takes part in the next step: open, idle, under its limit, no error pending, and not too far ahead of its reader. */
  get eager(): boolean {
    return (
      !this.closed &&
      this.#inFlight === undefined &&
      this.#step < this.#limit &&
      this.#ready.length < MAX_AHEAD &&
      !this.#ready.some((outcome) => !("token" in outcome))
    );
  }

  /** Its next evaluation is a prompt (more than one token), not one decoded token. */
  get prefilling(): boolean {
    return this.#iterator === undefined && this.#input.length > 1;
  }

  /**
   * Asks the sequence's generator for its next token. Called for every participant of a
   * step in the same tick, so each generator queues its decode before the library's batch
   * dispatch (on its next cycle) and they share one batch.
   */
  evaluate(): Promise<Outcome> {
    this.#iterator ??= this.#sequence.evaluate([...this.#input], this.#options)[Symbol.asyncIterator]();
    this.#step += 1;
    const evaluated = this.#iterator.next().then(
      (result): Outcome => (result.done === true ? { end: true } : { token: result.value }),
      (error: unknown): Outcome => ({ error }),
    );
    this.#inFlight = evaluated;
    return evaluated.finally(() => {
      if (this.#inFlight === evaluated) this.#inFlight = undefined;
    });
  }

  /**
   * Resolves once no evaluation of this participant is running, so that its sequence can
   * be handed to another request without a decode still writing to its cache.
   */
  async settled(): Promise<void> {
    while (this.#inFlight !== undefined) await this.#inFlight.catch(() => undefined);
    // Ends the generator (its sampler is freed in its own `finally`).
    await this.#iterator?.return?.().catch(() => undefined);
  }

  deliver(outcome: Outcome): void {
    if (this.closed) return;
    this.#delivered += 1;
    if ("token" in outcome) this.#onSampled(outcome.token);
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (waiting !== undefined) waiting(outcome);
    else this.#ready.push(outcome);
  }

  /** The next outcome, or null once closed. */
  next(): Promise<Outcome | null> {
    const ready = this.#ready.shift();
    if (ready !== undefined) {
      this.#onRead();
      return Promise.resolve(ready);
    }
    if (this.closed || this.#delivered >= this.#limit) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.#waiting = resolve;
      this.#onRead();
    });
  }

  close(): void {
    this.closed = true;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.(null);
  }
}

export class DecodeLoop implements SequenceDecoder {
  readonly kind = "library";
  readonly #participants = new Set<Participant>();
  #running = false;
  /** Wakes the loop when it idles because every participant is ahead of its reader. */
  #wake: (() => void) | undefined;

  cachedTokens(sequence: LlamaContextSequence): readonly Token[] {
    return sequence.contextTokens;
  }

  tokens(sequence: LlamaContextSequence, prompt: readonly Token[], reused: number, sampling: Sampling, limit: number): AsyncIterableIterator<Token> {
    // The penalty window reads the tokens the loop sampled, which may run a few ahead of what was read.
    const sampled: Token[] = [];
    const options = samplingOptions(sampling, sampled);
    const steps = (): AsyncIterableIterator<Token> => this.#steps(sequence, prompt.slice(reused), options, limit, (token) => sampled.push(token));
    return (async function* () {
      if (sequence.nextTokenIndex > reused) await sequence.eraseContextTokenRanges([{ start: reused, end: sequence.nextTokenIndex }]);
      yield* steps();
    })();
  }

  /**
   * Sampled tokens for `sequence`: first the token after `input` (the part of the prompt
   * not already in the sequence's cache), then one per step, as `tokens` says.
   */
  #steps(
    sequence: LlamaContextSequence,
    input: readonly Token[],
    options: SamplingOptions,
    limit: number,
    onSampled: (token: Token) => void,
  ): AsyncIterableIterator<Token> {
    const participant = new Participant(sequence, input, options, limit, () => this.#nudge(), onSampled);
    this.#participants.add(participant);
    this.#nudge();
    // Leaving waits for this participant's decode in flight: the caller frees the sequence next.
    const end = async (): Promise<IteratorResult<Token>> => {
      participant.close();
      this.#participants.delete(participant);
      this.#nudge();
      await participant.settled();
      return { done: true, value: undefined };
    };
    const iterator: AsyncIterableIterator<Token> = {
      next: async () => {
        const outcome = await participant.next();
        if (outcome === null || "end" in outcome) return end();
        if ("error" in outcome) {
          await end();
          throw outcome.error;
        }
        return { done: false, value: outcome.token };
      },
      return: async () => end(),
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** node-llama-cpp's context is closed by its owner; nothing of this loop's outlives its participants. */
  close(): void {
    for (const participant of this.#participants) participant.close();
  }

  /** Generations taking part in steps now. */
  get active(): number {
    return this.#participants.size;
  }

  #nudge(): void {
    if (this.#wake !== undefined) {
      const wake = this.#wake;
      this.#wake = undefined;
      wake();
    }
    if (!this.#running) void this.#run();
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#participants.size > 0) {
        const stepping = [...this.#participants].filter((participant) => participant.eager);
        if (stepping.length === 0) {
          // Everyone is ahead of its reader (or at its limit): wait for a read, a join or a leave.
          await new Promise<void>((resolve) => {
            this.#wake = resolve;
          });
          continue;
        }
        // Every evaluation is queued in this same tick, so they share one batch. A prompt's
        // prefill is not waited for: the step's decodes resolve after the first batch, while
        // a long prompt may take several; it joins the steps once its first token is out.
        const decoding = stepping.filter((participant) => !participant.prefilling);
        for (const participant of stepping) {
          if (participant.prefilling) {
            void participant.evaluate().then((outcome) => {
              participant.deliver(outcome);
              this.#nudge();
            });
          }
        }
        const outcomes = await Promise.all(decoding.map((participant) => participant.evaluate()));
        outcomes.forEach((outcome, index) => decoding[index]?.deliver(outcome));
      }
    } finally {
      this.#running = false;
    }
  }
}

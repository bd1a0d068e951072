/**
 * Lockstep decoding across the sequences of one context: every generation that wants a
 * token submits its input in the same tick, so node-llama-cpp's batch dispatcher (which
 * decodes whatever was queued before its next cycle) runs them all in one `llama_decode`
 * per step, as llama-server's slot loop does.
 *
 * Why not each sequence's own `evaluate()` generator: those resume at different moments
 * (after their sample, after the HTTP write of their last text), so one sequence always
 * missed the batch in flight and the context decoded 3 of 4 sequences per step, then the
 * straggler alone (measured: 4 streams no faster than 1). Here a step starts only when every
 * running generation has been given its result, and ends when all of them have a token.
 *
 * A generation whose reader falls behind by `MAX_AHEAD` tokens sits steps out, so a slow
 * client cannot make the others wait, nor run far ahead of what it reads. A new prompt's
 * prefill rides in the same batches but is not waited for by the step.
 */
import type { LlamaContextSequence, Token } from "node-llama-cpp";

/** Sampling of one step, as node-llama-cpp's `controlledEvaluate` takes it. */
export interface StepSampling {
  readonly temperature: number;
  readonly topP: number;
  readonly seed: number;
  readonly repeatPenalty?: {
    readonly punishTokens: Token[];
    readonly maxPunishTokens: number;
    readonly penalty: number;
    readonly presencePenalty: number;
    readonly frequencyPenalty: number;
  };
}

/** The sampling of step `step` (0 for the first token), given the tokens sampled before it. */
export type Sampling = (step: number, sampled: readonly Token[]) => StepSampling;

/** Tokens decoded but not yet read beyond which a generation waits for its reader. */
const MAX_AHEAD = 8;

type Outcome = { readonly token: Token } | { readonly error: unknown };

class Participant {
  readonly #sequence: LlamaContextSequence;
  readonly #sampling: Sampling;
  /** Every token sampled so far, for repetition penalties (the reader may lag behind). */
  readonly #sampled: Token[] = [];
  /** What the next step evaluates: the prompt first, then each sampled token. */
  #input: readonly Token[];
  #step = 0;
  #delivered = 0;
  readonly #limit: number;
  readonly #ready: Outcome[] = [];
  #waiting: ((outcome: Outcome | null) => void) | undefined;
  closed = false;
  /** This participant's evaluation in the step now running, if any. */
  #inFlight: Promise<unknown> | undefined;
  #onRead: () => void;

  constructor(sequence: LlamaContextSequence, input: readonly Token[], sampling: Sampling, limit: number, onRead: () => void) {
    this.#sequence = sequence;
    this.#limit = limit;
    this.#input = input;
    this.#sampling = sampling;
    this.#onRead = onRead;
  }

  /** Takes part in the next step: open, idle, under its limit, no error pending, and not too far ahead of its reader. */
  get eager(): boolean {
    return (
      !this.closed &&
      this.#inFlight === undefined &&
      this.#step < this.#limit &&
      this.#ready.length < MAX_AHEAD &&
      !this.#ready.some((outcome) => "error" in outcome)
    );
  }

  /** Its next evaluation is a prompt (more than one token), not one decoded token. */
  get prefilling(): boolean {
    return this.#input.length > 1;
  }

  /** Queues this step's decode (synchronously, so every participant lands in one batch). */
  evaluate(): Promise<Outcome> {
    const last = this.#input.length - 1;
    const input = this.#input.map((token, index) =>
      index === last ? ([token, { generateNext: { token: true, options: this.#sampling(this.#step, this.#sampled) } }] as const) : token,
    );
    this.#step += 1;
    const evaluated = this.#sequence.controlledEvaluate(input as Parameters<LlamaContextSequence["controlledEvaluate"]>[0]).then(
      (results): Outcome => {
        const token = results[last]?.next.token;
        if (token === undefined || token === null) return { error: new Error("the engine returned no token") };
        return { token };
      },
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
  }

  deliver(outcome: Outcome): void {
    if (this.closed) return;
    this.#delivered += 1;
    if ("token" in outcome) {
      this.#input = [outcome.token];
      this.#sampled.push(outcome.token);
    }
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

export class DecodeLoop {
  readonly #participants = new Set<Participant>();
  #running = false;
  /** Wakes the loop when it idles because every participant is ahead of its reader. */
  #wake: (() => void) | undefined;

  /**
   * Sampled tokens for `sequence`: first the token after `input` (the part of the prompt
   * not already in the sequence's cache), then one per step, at most `limit` in all, until
   * the iteration is ended (`return()`) or the engine fails (the error is thrown). The
   * caller decides when to stop early (end of generation, stop strings) and must end the
   * iteration then; it ends by itself after `limit` tokens.
   */
  tokens(sequence: LlamaContextSequence, input: readonly Token[], sampling: Sampling, limit: number): AsyncIterableIterator<Token> {
    const participant = new Participant(sequence, input, sampling, limit, () => this.#nudge());
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
        if (outcome === null) return end();
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

/**
 * What a generation needs from the engine: the tokens one sequence's KV cache holds, and the
 * sampled continuation of a prompt on it. Two implementations: Parley's native decode loop
 * (native-decode-loop.ts, one thread decoding and sampling every sequence, llama-server's
 * shape) and the lockstep loop over node-llama-cpp's `evaluate` (decode-loop.ts), used where
 * the native addon is not built.
 */
import type { LlamaContextSequence, Token } from "node-llama-cpp";
import type { GenerationRequest } from "../backend.js";

/** How a generation samples: the request's settings. */
export type Sampling = Pick<GenerationRequest, "temperature" | "topP" | "seed" | "presencePenalty" | "frequencyPenalty">;

/** Greedy decoding, no penalties: what the kernel measurement and the tests decode with. */
export const GREEDY: Sampling = { temperature: 0, topP: 1, seed: undefined, presencePenalty: 0, frequencyPenalty: 0 };

/** Penalties look back this many generated tokens, as llama.cpp's `penalty_last_n` does by default. */
export const PENALTY_WINDOW = 64;

/** Candidates kept before top-p, as node-llama-cpp's and llama-server's default `top_k`. */
export const TOP_K = 40;

/** Tokens decoded but not yet read beyond which a generation waits for its reader. */
export const MAX_AHEAD = 8;

export interface SequenceDecoder {
  /** Which loop this is, for the start-up log. */
  readonly kind: "native" | "library";
  /** The tokens `sequence`'s KV cache holds now (the prompt and output of its last generation). */
  cachedTokens(sequence: LlamaContextSequence): readonly Token[];
  /**
   * Sampled tokens for `prompt` on `sequence`, whose cache keeps its first `reused` tokens
   * (a prefix of `prompt`, shorter than it): first the token after the prompt, then one per
   * step, at most `limit`. The iteration ends at the model's end-of-generation token (not
   * yielded), after `limit` tokens, or when the caller ends it (`return()`, which resolves once
   * nothing decodes on the sequence any more, so it can be handed to the next request); an
   * engine failure is thrown. Nothing runs until the first `next()`.
   */
  tokens(sequence: LlamaContextSequence, prompt: readonly Token[], reused: number, sampling: Sampling, limit: number): AsyncIterableIterator<Token>;
  /** Generations running now. */
  readonly active: number;
  /** Stops decoding: generations still running end at once (the native loop's with an error). */
  close(): void;
}

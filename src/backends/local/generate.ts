/**
 * One generation on one sequence: reuse the KV cache the sequence already holds for the
 * longest common prefix of the prompt, evaluate the rest, then sample until EOG, a stop
 * string, `max_tokens`, or the abort signal. Yields text that is safe to send.
 */
import type { LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp";
import type { GenerationEvent, GenerationRequest } from "../backend.js";
import type { SequenceDecoder } from "./sequence-decoder.js";
import { StopMatcher } from "./stop-matcher.js";
import { TokenDecoder } from "./token-decoder.js";

export interface GenerationInput {
  readonly request: GenerationRequest;
  readonly promptTokens: readonly Token[];
  readonly templateStops: readonly string[];
  /** Called once per generated token (for counters). */
  readonly onToken?: () => void;
  /** Filled in as generation goes, so an abandoned generation's usage is known. */
  readonly usage?: { cachedTokens: number; completionTokens: number };
}

export function commonPrefixLength(a: readonly Token[], b: readonly Token[]): number {
  const limit = Math.min(a.length, b.length);
  let index = 0;
  while (index < limit && a[index] === b[index]) index += 1;
  return index;
}

export async function* generate(
  model: LlamaModel,
  engine: SequenceDecoder,
  sequence: LlamaContextSequence,
  input: GenerationInput,
  signal: AbortSignal,
): AsyncGenerator<GenerationEvent, void, void> {
  const { request, promptTokens } = input;
  // At least one prompt token is always evaluated: its logits seed the first sample.
  const reused = Math.min(commonPrefixLength(engine.cachedTokens(sequence), promptTokens), promptTokens.length - 1);

  if (input.usage !== undefined) input.usage.cachedTokens = reused;
  const generated: Token[] = [];
  const decoder = new TokenDecoder((tokens, lastTokens) => model.detokenize(tokens, false, lastTokens));
  const clientStops = new StopMatcher(request.stop);
  const templateStops = new StopMatcher(input.templateStops);

  const tokens = engine.tokens(sequence, promptTokens, reused, request, request.maxTokens);

  const finish = (finishReason: "stop" | "length", stopReason: string | null): GenerationEvent => ({
    type: "finish",
    finishReason,
    stopReason,
    promptTokens: promptTokens.length,
    completionTokens: generated.length,
    cachedTokens: reused,
  });

  for await (const token of tokens) {
    if (signal.aborted) return;
    if (model.isEogToken(token)) break; // the model ended its turn; the EOG token is not text
    generated.push(token);
    input.onToken?.();
    if (input.usage !== undefined) input.usage.completionTokens = generated.length;
    // Template stops first: a turn terminator must not leak even if a client stop would match later.
    const template = templateStops.push(decoder.push(token));
    const client = clientStops.push(template.text);
    if (client.text.length > 0) yield { type: "delta", text: client.text };
    if (client.stop !== null) {
      yield finish("stop", client.stop);
      return;
    }
    if (template.stop !== null) {
      yield finish("stop", null);
      return;
    }
    if (generated.length >= request.maxTokens) break;
  }
  if (signal.aborted) return;
  // EOG or max_tokens: what was held back can no longer become a stop string.
  const tail = clientStops.push(templateStops.push(decoder.flush()).text + templateStops.flush());
  const rest = tail.text + (tail.stop === null ? clientStops.flush() : "");
  if (rest.length > 0) yield { type: "delta", text: rest };
  if (tail.stop !== null) yield finish("stop", tail.stop);
  else yield finish(generated.length >= request.maxTokens ? "length" : "stop", null);
}

/**
 * Turns generated tokens into text incrementally without splitting a multi-byte
 * character: a token that ends inside a UTF-8 sequence detokenizes to U+FFFD, so its
 * text is held until the tokens that complete the character arrive.
 */
import type { Token } from "node-llama-cpp";

export type Detokenize = (tokens: readonly Token[], lastTokens: readonly Token[]) => string;

/** A character spans at most 4 bytes, so 4 pending tokens that still end in U+FFFD are truly invalid. */
const MAX_PENDING_TOKENS = 4;
/** Context handed to the detokenizer so it renders a token's leading space correctly. */
const CONTEXT_TOKENS = 4;
const REPLACEMENT = "\uFFFD";

export class TokenDecoder {
  readonly #detokenize: Detokenize;
  readonly #committed: Token[] = [];
  #pending: Token[] = [];

  constructor(detokenize: Detokenize) {
    this.#detokenize = detokenize;
  }

  push(token: Token): string {
    this.#pending.push(token);
    const text = this.#render();
    if (text.endsWith(REPLACEMENT) && this.#pending.length < MAX_PENDING_TOKENS) return "";
    return this.#commit(text);
  }

  /** Text of tokens still pending at the end of generation, invalid bytes and all. */
  flush(): string {
    return this.#pending.length === 0 ? "" : this.#commit(this.#render());
  }

  #render(): string {
    return this.#detokenize(this.#pending, this.#committed.slice(-CONTEXT_TOKENS));
  }

  #commit(text: string): string {
    this.#committed.push(...this.#pending);
    if (this.#committed.length > CONTEXT_TOKENS * 4) this.#committed.splice(0, this.#committed.length - CONTEXT_TOKENS);
    this.#pending = [];
    return text;
  }
}

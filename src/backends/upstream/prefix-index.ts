/**
 * Which upstream has served which prompt prefix, for prefix-affinity routing (the idea of
 * SGLang's cache-aware router, on text rather than tokens, since the gateway has no
 * tokenizer): a prompt is cut into blocks of `blockChars` characters, each block keyed by a
 * hash of everything up to its end (a chain, as vLLM's prefix cache keys its blocks), so
 * one lookup per block finds how far a prompt's prefix was seen, and by whom. Bounded:
 * least recently used blocks are forgotten first.
 */
import { createHash } from "node:crypto";

/**
 * The chained block keys of a prompt text; only whole blocks. Hashed as UTF-16 code units,
 * so a block boundary inside a surrogate pair cannot make two different prompts collide.
 */
export function prefixBlocks(text: string, blockChars: number): string[] {
  const keys: string[] = [];
  let previous = "";
  for (let end = blockChars; end <= text.length; end += blockChars) {
    previous = createHash("sha1").update(previous).update(text.slice(end - blockChars, end), "utf16le").digest("base64");
    keys.push(previous);
  }
  return keys;
}

/** The text a prompt's prefix is matched on: every message's role and content, delimited. */
export function promptText(messages: ReadonlyArray<{ readonly role: string; readonly content: string }>): string {
  return messages.map((message) => `${message.role}\u0000${message.content}\u0001`).join("");
}

export class PrefixIndex<Holder> {
  readonly #maxBlocks: number;
  /** Block key → the holders that served it; Map order is recency (oldest first). */
  readonly #blocks = new Map<string, Set<Holder>>();

  constructor(maxBlocks: number) {
    this.#maxBlocks = maxBlocks;
  }

  get size(): number {
    return this.#blocks.size;
  }

  /**
   * For each candidate, how many leading blocks of `keys` it is known to hold. Stops at the
   * first block nobody holds: a later key (a hash over the whole prefix) cannot be held then.
   */
  match(keys: readonly string[], candidates: readonly Holder[]): Map<Holder, number> {
    const matched = new Map<Holder, number>();
    for (let index = 0; index < keys.length; index++) {
      const holders = this.#blocks.get(keys[index] as string);
      if (holders === undefined) break;
      let any = false;
      for (const candidate of candidates) {
        if (holders.has(candidate)) {
          matched.set(candidate, index + 1);
          any = true;
        }
      }
      if (!any) break;
    }
    return matched;
  }

  /** `holder` now holds every block of `keys` (refreshing their recency). */
  record(keys: readonly string[], holder: Holder): void {
    // Deepest first, so that eviction takes a prompt's tail before its head: `match` stops at
    // the first missing block, and a tail without its head would be unreachable.
    for (const key of [...keys].reverse()) {
      const holders = this.#blocks.get(key) ?? new Set<Holder>();
      this.#blocks.delete(key);
      holders.add(holder);
      this.#blocks.set(key, holders);
    }
    while (this.#blocks.size > this.#maxBlocks) {
      const oldest = this.#blocks.keys().next().value as string;
      this.#blocks.delete(oldest);
    }
  }

  /** Forgets `holder` (e.g. it restarted, so its cache is gone). */
  forget(holder: Holder): void {
    for (const [key, holders] of this.#blocks) {
      holders.delete(holder);
      if (holders.size === 0) this.#blocks.delete(key);
    }
  }
}

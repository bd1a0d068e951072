/**
 * Finds stop strings in streamed text without ever letting one reach the client, not
 * even its first part: text is held back only while it could still be the start of a
 * stop string, and released as soon as it cannot.
 */

export interface StopMatch {
  /** Text that is safe to send now. */
  readonly text: string;
  /** The stop string that ended generation, if one was completed. */
  readonly stop: string | null;
}

export class StopMatcher {
  readonly #stops: readonly string[];
  #held = "";

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((stop) => stop.length > 0);
  }

  push(text: string): StopMatch {
    const buffer = this.#held + text;
    // The stop that completes first wins (then the longer one): the same answer however
    // the text was split into pieces, so streaming and non-streaming agree.
    let at = -1;
    let end = Infinity;
    let found: string | null = null;
    for (const stop of this.#stops) {
      const index = buffer.indexOf(stop);
      if (index === -1) continue;
      const stopEnd = index + stop.length;
      if (stopEnd < end || (stopEnd === end && index < at)) {
        at = index;
        end = stopEnd;
        found = stop;
      }
    }
    if (found !== null) {
      this.#held = "";
      return { text: buffer.slice(0, at), stop: found };
    }
    const keep = this.#partialMatchLength(buffer);
    let cut = buffer.length - keep;
    // Never end a chunk on the first half of a surrogate pair.
    if (cut > 0 && isHighSurrogate(buffer.charCodeAt(cut - 1))) cut -= 1;
    this.#held = buffer.slice(cut);
    return { text: buffer.slice(0, cut), stop: null };
  }

  /** At the end of generation: whatever was held back could not become a stop string. */
  flush(): string {
    const held = this.#held;
    this.#held = "";
    return held;
  }

  /** The longest suffix of `buffer` that is a proper prefix of some stop string. */
  #partialMatchLength(buffer: string): number {
    let longest = 0;
    for (const stop of this.#stops) {
      const max = Math.min(stop.length - 1, buffer.length);
      for (let length = max; length > longest; length--) {
        if (buffer.endsWith(stop.slice(0, length))) {
          longest = length;
          break;
        }
      }
    }
    return longest;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

import assert from "node:assert/strict";
import { test } from "node:test";
import type { Token } from "node-llama-cpp";
import { TokenDecoder } from "../../src/backends/local/token-decoder.js";

/** A byte-level fake detokenizer: token n is the byte n. */
const bytes = (tokens: readonly Token[]): string => Buffer.from(tokens.map(Number)).toString("utf8");
const tokensOf = (text: string): Token[] => [...Buffer.from(text, "utf8")].map((byte) => byte as Token);

test("a multi-byte character is held until its last byte arrives", () => {
  const decoder = new TokenDecoder((tokens) => bytes(tokens));
  const pieces = tokensOf("é€😀").map((token) => decoder.push(token));
  assert.deepEqual(pieces.filter((piece) => piece.length > 0), ["é", "€", "😀"]);
});

test("ASCII passes through token by token", () => {
  const decoder = new TokenDecoder((tokens) => bytes(tokens));
  assert.deepEqual(tokensOf("hi").map((token) => decoder.push(token)), ["h", "i"]);
});

test("invalid bytes are emitted after four tokens instead of being held forever", () => {
  const decoder = new TokenDecoder((tokens) => bytes(tokens));
  const out = [0xe2, 0xe2, 0xe2, 0xe2].map((byte) => decoder.push(byte as Token));
  assert.equal(out.slice(0, 3).join(""), "");
  assert.ok(out[3]!.length > 0);
});

test("flush releases an incomplete character at the end", () => {
  const decoder = new TokenDecoder((tokens) => bytes(tokens));
  assert.equal(decoder.push(0xe2 as Token), "");
  assert.equal(decoder.flush(), "\uFFFD");
  assert.equal(decoder.flush(), "");
});

test("the detokenizer gets the preceding tokens as context", () => {
  const seen: Array<readonly Token[]> = [];
  const decoder = new TokenDecoder((tokens, last) => {
    seen.push(last);
    return bytes(tokens);
  });
  for (const token of tokensOf("abcdef")) decoder.push(token);
  assert.deepEqual(seen.at(-1), tokensOf("bcde"));
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { StopMatcher } from "../../src/backends/local/stop-matcher.js";

/** Feeds pieces and returns what was emitted before the stop, and the stop. */
function run(stops: string[], pieces: string[]): { emitted: string[]; stop: string | null; rest: string } {
  const matcher = new StopMatcher(stops);
  const emitted: string[] = [];
  for (const piece of pieces) {
    const result = matcher.push(piece);
    if (result.text.length > 0) emitted.push(result.text);
    if (result.stop !== null) return { emitted, stop: result.stop, rest: "" };
  }
  return { emitted, stop: null, rest: matcher.flush() };
}

test("a stop string inside one piece cuts the text before it", () => {
  assert.deepEqual(run(["\n"], ["Hello\nworld"]), { emitted: ["Hello"], stop: "\n", rest: "" });
});

test("a stop string split across pieces never leaks its first part", () => {
  const result = run(["STOP"], ["abc S", "T", "OP more"]);
  assert.deepEqual(result.emitted, ["abc "]);
  assert.equal(result.stop, "STOP");
  for (const chunk of result.emitted) assert.ok(!chunk.includes("S"));
});

test("text is released as soon as it can no longer start a stop string", () => {
  const matcher = new StopMatcher(["the end"]);
  assert.deepEqual(matcher.push("once upon a time th"), { text: "once upon a time ", stop: null });
  assert.deepEqual(matcher.push("ere"), { text: "there", stop: null });
  assert.equal(matcher.flush(), "");
});

test("held text is flushed at the end when no stop completed", () => {
  assert.deepEqual(run(["abc"], ["xx ab"]), { emitted: ["xx "], stop: null, rest: "ab" });
});

test("the stop string that completes first wins", () => {
  assert.equal(run(["world", "lo w"], ["hello world"]).stop, "lo w");
  assert.deepEqual(run(["bc", "abcd"], ["xabcd"]).emitted, ["xa"]);
});

test("at the same position the shorter stop completes first", () => {
  assert.equal(run(["ab", "abc"], ["zabc"]).stop, "ab");
});

test("which stop wins does not depend on how the text was split", () => {
  const stops = ["bcd", "abcde", "d e"];
  const text = "xxabcd efg";
  const whole = run(stops, [text]);
  const single = run(stops, [...text]);
  assert.equal(single.stop, whole.stop);
  assert.equal(single.emitted.join(""), whole.emitted.join(""));
});

test("a repeated prefix of the stop string is handled", () => {
  const result = run(["aab"], ["a", "a", "a", "a", "b"]);
  assert.deepEqual(result.emitted.join(""), "aa");
  assert.equal(result.stop, "aab");
});

test("no stop strings: everything passes straight through", () => {
  const matcher = new StopMatcher([]);
  assert.deepEqual(matcher.push("anything"), { text: "anything", stop: null });
});

test("never ends a chunk on half a surrogate pair", () => {
  const matcher = new StopMatcher(["\uDE00x"]);
  const emoji = "\uD83D\uDE00";
  const result = matcher.push(`a${emoji}`);
  assert.ok(!/[\uD800-\uDBFF]$/.test(result.text));
  assert.equal(result.text + matcher.flush(), `a${emoji}`);
});

/**
 * Stop strings on a real trained model (stories260K writes English), in both modes: the
 * generation ends where the string first appears, `stop_reason` is that string, and the
 * string never reaches the client — not even its first part in a chunk (DESIGN §3).
 *
 * Each stop string is taken from the model's own unstopped text at temperature 0, so the
 * model is certain to produce it, and the expected answer is the text before it.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  assertCompletionShape,
  assertUsage,
  chunksOf,
  contentDeltas,
  streamedText,
  type Chunk,
  type Completion,
} from "../helpers/chat-assertions.js";
import { STORIES_260K } from "../helpers/models.js";
import { postChat, readEvents, startParley, type RunningParley } from "../helpers/parley.js";

const REQUEST = {
  model: "test-model",
  messages: [{ role: "user", content: "Once upon a time" }],
  temperature: 0,
  seed: 7,
  max_tokens: 120,
};

interface Outcome {
  content: string;
  finishReason: string | null | undefined;
  stopReason: string | null | undefined;
  completionTokens: number;
  chunks?: Chunk[];
}

describe("stop strings", () => {
  let parley: RunningParley;
  /** The unstopped text, and its deltas as streamed (one per token for this ASCII model). */
  let text: string;
  let deltas: string[];

  const complete = async (extra: Record<string, unknown>): Promise<Outcome> => {
    const response = await postChat(parley, { ...REQUEST, ...extra });
    const raw = await response.text();
    assert.equal(response.status, 200, raw);
    const body = JSON.parse(raw) as Completion;
    assertCompletionShape(body, "test-model");
    const choice = body.choices[0];
    return {
      content: choice?.message.content ?? "",
      finishReason: choice?.finish_reason,
      stopReason: choice?.stop_reason,
      completionTokens: body.usage.completion_tokens,
    };
  };

  const stream = async (extra: Record<string, unknown>): Promise<Outcome> => {
    const response = await postChat(parley, { ...REQUEST, ...extra, stream: true, stream_options: { include_usage: true } });
    assert.equal(response.status, 200);
    const chunks = chunksOf(await readEvents(response));
    const finishing = chunks.filter((chunk) => (chunk.choices[0]?.finish_reason ?? null) !== null);
    assert.equal(finishing.length, 1, "exactly one chunk carries finish_reason");
    const usage = chunks.at(-1)?.usage;
    assertUsage(usage);
    return {
      content: streamedText(chunks),
      finishReason: finishing[0]?.choices[0]?.finish_reason,
      stopReason: finishing[0]?.choices[0]?.stop_reason,
      completionTokens: usage.completion_tokens,
      chunks,
    };
  };

  /** Both modes stop at the first occurrence of the earliest stop string. */
  const expectStopsAt = async (stop: string | string[], expectedStop: string): Promise<void> => {
    const at = text.indexOf(expectedStop);
    assert.ok(at !== -1, `the model writes ${JSON.stringify(expectedStop)}`);
    const expected = text.slice(0, at);
    for (const mode of [complete, stream]) {
      const outcome = await mode({ stop });
      const label = `${mode === complete ? "non-streaming" : "streaming"}, stop ${JSON.stringify(stop)}`;
      assert.equal(outcome.finishReason, "stop", label);
      assert.equal(outcome.stopReason, expectedStop, label);
      assert.equal(outcome.content, expected, label);
      for (const each of [stop].flat()) assert.ok(!outcome.content.includes(each), `${label}: the text never contains the stop string`);
      assert.ok(outcome.completionTokens > 0 && outcome.completionTokens < REQUEST.max_tokens, `${label}: ${outcome.completionTokens} tokens`);
      if (outcome.chunks !== undefined) {
        // Every chunk extends a prefix of the stopped text: nothing sent was later taken back.
        let sent = "";
        for (const delta of contentDeltas(outcome.chunks)) {
          sent += delta;
          assert.ok(expected.startsWith(sent), `${label}: chunk ${JSON.stringify(delta)} goes past the stop`);
        }
      }
    }
  };

  before(async () => {
    parley = await startParley({ modelPath: STORIES_260K });
    const reference = await stream({});
    text = reference.content;
    deltas = contentDeltas(reference.chunks ?? []);
    assert.equal(reference.finishReason, "length", `the reference runs to max_tokens: ${JSON.stringify(text)}`);
    assert.equal((await complete({})).content, text, "the reference is the same in both modes");
  });
  after(async () => {
    await parley?.close();
  });

  test("common words and punctuation the model writes", async () => {
    const candidates = [" was", "the", ".", ",", "\n", " a ", "She", "He"];
    const stops = candidates.filter((word) => text.indexOf(word) > 0);
    assert.ok(stops.length >= 3, `enough of ${JSON.stringify(candidates)} in ${JSON.stringify(text)}`);
    for (const stop of stops) await expectStopsAt(stop, stop);
  });

  test("a word from later in the story", async () => {
    const words = text.split(/\s+/).filter((word) => /^[a-z]{4,}$/i.test(word));
    const later = words.find((word) => text.indexOf(word) > text.length / 3);
    assert.ok(later !== undefined, `a word from later in ${JSON.stringify(text)}`);
    await expectStopsAt(` ${later}`, ` ${later}`);
  });

  test("a stop string spanning several tokens, starting and ending mid-token", async () => {
    const start = deltas.findIndex((delta, index) => index > 2 && delta.length >= 2 && (deltas[index + 1]?.length ?? 0) >= 1 && (deltas[index + 2]?.length ?? 0) >= 2);
    assert.ok(start !== -1, `three usable tokens in ${JSON.stringify(deltas)}`);
    const [a, b, c] = [deltas[start] ?? "", deltas[start + 1] ?? "", deltas[start + 2] ?? ""];
    const spanning = a.slice(-1) + b + c.slice(0, 1);
    await expectStopsAt(spanning, spanning);
  });

  test("a long stop string: a whole phrase of many tokens", async () => {
    const from = Math.floor(text.length / 2);
    const phrase = text.slice(from, from + 24);
    assert.equal(phrase.length, 24);
    await expectStopsAt(phrase, phrase);
  });

  test("an array of stops: the earliest in the text wins", async () => {
    const firstPeriod = text.indexOf(".");
    const firstSpace = text.indexOf(" ");
    assert.ok(firstPeriod > 0 && firstSpace > 0 && firstPeriod !== firstSpace);
    const earliest = firstPeriod < firstSpace ? "." : " ";
    await expectStopsAt(["\u0001never", ".", " ", "zzzz"], earliest);
  });

  test("a stop string at the very start: empty content, finish_reason stop", async () => {
    const stop = text.slice(0, 2);
    await expectStopsAt(stop, stop);
  });

  test("a stop string that never appears: the full text, finish_reason length", async () => {
    for (const stop of ["\u0001never", "xyzzy"]) {
      for (const mode of [complete, stream]) {
        const outcome = await mode({ stop });
        assert.equal(outcome.content, text);
        assert.equal(outcome.finishReason, "length");
        assert.equal(outcome.stopReason, null);
        assert.equal(outcome.completionTokens, REQUEST.max_tokens);
      }
    }
  });

  test("text that only starts a stop string is held back, then sent when generation ends", async () => {
    // The text's last characters followed by something the model never wrote.
    const stop = `${text.slice(-3)}\u0001`;
    for (const mode of [complete, stream]) {
      const outcome = await mode({ stop });
      assert.equal(outcome.content, text, "the held-back tail is released at max_tokens");
      assert.equal(outcome.finishReason, "length");
      assert.equal(outcome.stopReason, null);
    }
  });

  test("nothing is held back when no stop string can match: same chunks as without stops", async () => {
    const outcome = await stream({ stop: ["\u0001", "\u0002\u0003"] });
    assert.deepEqual(contentDeltas(outcome.chunks ?? []), deltas);
  });

  test("a streamed stop's usage agrees with the non-streamed one", async () => {
    const stop = text.indexOf(" was") > 0 ? " was" : ".";
    const [plain, streamed] = [await complete({ stop }), await stream({ stop })];
    assert.equal(streamed.completionTokens, plain.completionTokens);
  });
});

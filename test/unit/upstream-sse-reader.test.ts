import assert from "node:assert/strict";
import { test } from "node:test";
import { readSseData, UpstreamProtocolError } from "../../src/backends/upstream/sse-reader.js";

const encoder = new TextEncoder();

async function* stream(pieces: readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const piece of pieces) yield piece;
}

async function readAll(pieces: readonly Uint8Array[]): Promise<string[]> {
  const events: string[] = [];
  for await (const data of readSseData(stream(pieces))) events.push(data);
  return events;
}

/** The bytes cut at each of `positions` (ascending byte offsets). */
function cut(bytes: Uint8Array, positions: readonly number[]): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  let start = 0;
  for (const position of positions) {
    pieces.push(bytes.subarray(start, position));
    start = position;
  }
  pieces.push(bytes.subarray(start));
  return pieces;
}

/** Every feature at once: a comment, CRLF, a named event, multi-byte text, multi-line data. */
const MIXED =
  ": keep-alive\r\n\r\n" +
  'data: {"t":"é"}\r\n\r\n' +
  "event: ping\ndata: {}\n\n" +
  "data: 日本\ndata: 👋 ok\n\n" +
  "data: [DONE]\n\n";
const MIXED_EVENTS = ['{"t":"é"}', "日本\n👋 ok", "[DONE]"];

test("whole stream in one piece", async () => {
  assert.deepEqual(await readAll([encoder.encode(MIXED)]), MIXED_EVENTS);
});

test("a stream split at any one byte reads the same, including inside 'data:' and inside multi-byte characters", async () => {
  const bytes = encoder.encode(MIXED);
  // The text holds characters of 2, 3 and 4 bytes, so some cuts fall inside a character.
  assert.ok(bytes.length > MIXED.length + 6);
  for (let position = 0; position <= bytes.length; position++) {
    assert.deepEqual(await readAll(cut(bytes, [position])), MIXED_EVENTS, `cut at byte ${position}`);
  }
});

test("a stream split at any two bytes reads the same", async () => {
  const bytes = encoder.encode(MIXED);
  for (let first = 0; first <= bytes.length; first++) {
    for (let second = first; second <= bytes.length; second++) {
      assert.deepEqual(await readAll(cut(bytes, [first, second])), MIXED_EVENTS, `cuts at bytes ${first} and ${second}`);
    }
  }
});

test("a stream arriving one byte at a time reads the same", async () => {
  const bytes = encoder.encode(MIXED);
  const positions = Array.from({ length: bytes.length - 1 }, (_, index) => index + 1);
  assert.deepEqual(await readAll(cut(bytes, positions)), MIXED_EVENTS);
});

test("each of a four-byte emoji's bytes in its own piece still makes one character", async () => {
  const bytes = encoder.encode("data: 👋\n\n");
  const start = encoder.encode("data: ").length;
  assert.deepEqual(await readAll(cut(bytes, [start + 1, start + 2, start + 3])), ["👋"]);
});

test("CRLF and lone CR line endings", async () => {
  assert.deepEqual(await readAll([encoder.encode("data: a\r\n\r\ndata: b\r\n\r\n")]), ["a", "b"]);
  assert.deepEqual(await readAll([encoder.encode("data: a\r\rdata: b\r\r")]), ["a", "b"]);
  // The CR and the LF of one CRLF in different pieces are still one line end, not two.
  assert.deepEqual(await readAll([encoder.encode("data: a\r"), encoder.encode("\ndata: b\r\n\r\n")]), ["a\nb"]);
});

test("comments and blank lines alone make no events", async () => {
  assert.deepEqual(await readAll([encoder.encode(": keep-alive\n\n:\n\n\n\n: ping\n\n")]), []);
  // A comment between two data lines does not end the event.
  assert.deepEqual(await readAll([encoder.encode("data: a\n: keep-alive\ndata: b\n\n")]), ["a\nb"]);
});

test("named events are skipped, 'message' events are not, and the name does not leak into the next event", async () => {
  const text = "event: ping\ndata: {}\n\nevent: message\ndata: m\n\ndata: next\n\nevent: error\ndata: e\n\n";
  assert.deepEqual(await readAll([encoder.encode(text)]), ["m", "next"]);
});

test("'data:' without the space (TGI) and other fields", async () => {
  assert.deepEqual(await readAll([encoder.encode('data:{"a":1}\n\nid: 7\nretry: 1000\ndata: x\n\n')]), ['{"a":1}', "x"]);
});

test("a final event without its blank line still counts", async () => {
  assert.deepEqual(await readAll([encoder.encode("data: a\n\ndata: [DONE]")]), ["a", "[DONE]"]);
  assert.deepEqual(await readAll([encoder.encode("data: [DONE]\n")]), ["[DONE]"]);
  assert.deepEqual(await readAll([encoder.encode("data: [DONE]\r")]), ["[DONE]"]);
  assert.deepEqual(await readAll([encoder.encode("data: [DONE]\r\n")]), ["[DONE]"]);
});

test("an empty body or a body of comments ends with no events", async () => {
  assert.deepEqual(await readAll([]), []);
  assert.deepEqual(await readAll([encoder.encode(": only a comment")]), []);
});

test("a leading byte order mark is not part of the first field name", async () => {
  assert.deepEqual(await readAll([new Uint8Array([0xef, 0xbb, 0xbf]), encoder.encode("data: a\n\n")]), ["a"]);
  assert.deepEqual(await readAll([new Uint8Array([0xef, 0xbb]), new Uint8Array([0xbf]), encoder.encode("data: a\n\n")]), ["a"]);
});

test("events are yielded as they arrive, before the body ends", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  let ended = false;
  async function* body(): AsyncGenerator<Uint8Array> {
    yield encoder.encode("data: first\n\n");
    await held;
    yield encoder.encode("data: second\n\n");
    ended = true;
  }
  const events = readSseData(body());
  assert.deepEqual(await events.next(), { value: "first", done: false });
  assert.equal(ended, false);
  release();
  assert.deepEqual(await events.next(), { value: "second", done: false });
  assert.deepEqual(await events.next(), { value: undefined, done: true });
});

test("bytes that are not UTF-8 become replacement characters, not an error", async () => {
  const bytes = new Uint8Array([...encoder.encode("data: a"), 0xff, ...encoder.encode("b\n\n")]);
  assert.deepEqual(await readAll([bytes]), ["a\uFFFDb"]);
  // A character cut off by the end of the body.
  assert.deepEqual(await readAll([encoder.encode("data: x"), new Uint8Array([0xe6, 0x97])]), ["x\uFFFD"]);
});

const MiB = 1024 * 1024;

/** `text` in pieces of 64 KiB, as a network would deliver a large event. */
function inPieces(text: string): Uint8Array[] {
  const bytes = encoder.encode(text);
  const positions: number[] = [];
  for (let position = 65_536; position < bytes.length; position += 65_536) positions.push(position);
  return cut(bytes, positions);
}

test("an event just under 1 MiB is read whole", async () => {
  const big = "x".repeat(MiB - 64);
  const events = await readAll(inPieces(`data: ${big}\n\ndata: after\n\n`));
  assert.equal(events.length, 2);
  assert.equal(events[0]?.length, big.length);
  assert.equal(events[1], "after");
});

test("an event over 1 MiB is a protocol error, after the events before it were read", async () => {
  const events = readSseData(stream(inPieces(`data: before\n\ndata: ${"x".repeat(2 * MiB)}\n\ndata: after\n\n`)));
  assert.deepEqual(await events.next(), { value: "before", done: false });
  await assert.rejects(events.next(), (error: unknown) => error instanceof UpstreamProtocolError && /1 MiB/.test(error.message));
});

test("one byte over 1 MiB is refused once the buffered line passes the limit", async () => {
  // The event's line end comes in a piece of its own, so the whole event is buffered first.
  const pieces = [...inPieces(`data: ${"x".repeat(MiB + 1)}`), encoder.encode("\n\n")];
  await assert.rejects(readAll(pieces), UpstreamProtocolError);
});

test("many data lines adding up to over 1 MiB are a protocol error too", async () => {
  const line = `data: ${"y".repeat(1000)}\n`;
  const text = line.repeat(2100) + "\n";
  await assert.rejects(readAll(inPieces(text)), UpstreamProtocolError);
});

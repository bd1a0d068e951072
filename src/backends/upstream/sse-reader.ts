/**
 * Server-sent events from an upstream response body, as the `data` of each event.
 *
 * Bytes are decoded as a stream (a character split across two network reads is joined, not
 * replaced) and parsed by `eventsource-parser`, so lines split anywhere, CRLF line endings,
 * comments (`: keep-alive`) and multi-line data all read as the SSE spec says.
 */
import { createParser, type EventSourceMessage } from "eventsource-parser";

/** An upstream that broke the protocol: not a stream of events, or an event that is not JSON. */
export class UpstreamProtocolError extends Error {
  override readonly name = "UpstreamProtocolError";
}

/**
 * Largest unfinished line, in characters, Parley buffers from an upstream before giving up on
 * it (about 1 MiB): a guard against a stream that never ends its line, not an exact event cap.
 */
const MAX_EVENT_BYTES = 1024 * 1024;

export async function* readSseData(body: AsyncIterable<Uint8Array>): AsyncGenerator<string, void, undefined> {
  const decoder = new TextDecoder("utf-8");
  const ready: string[] = [];
  let failure: Error | undefined;
  const parser = createParser({
    onEvent: (event: EventSourceMessage) => {
      if (event.event === undefined || event.event === "message") ready.push(event.data);
      // Other named events (e.g. `event: ping`) are not part of the OpenAI stream; skip them.
    },
    onError: (error) => {
      if (error.type === "max-buffer-size-exceeded") failure = new UpstreamProtocolError("the upstream sent an event larger than 1 MiB");
    },
    maxBufferSize: MAX_EVENT_BYTES,
  });
  for await (const bytes of body) {
    parser.feed(decoder.decode(bytes, { stream: true }));
    while (ready.length > 0) yield ready.shift() as string;
    if (failure !== undefined) throw failure;
  }
  parser.feed(decoder.decode());
  // A final event without its blank line still counts: some servers close right after `data: [DONE]`.
  parser.feed("\n\n");
  while (ready.length > 0) yield ready.shift() as string;
}

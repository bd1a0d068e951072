// Server-Sent Events from a fetch() body, in the layers openai-node uses: bytes to text
// (a multi-byte character split across reads is kept whole), text to lines (CR, LF or
// CRLF, even when a CRLF is split across reads), lines to events (a blank line ends one).

/**
 * Yields each event's `{event, data}`; `data` joins multi-line data with "\n".
 * Comments (`:`) and `id`/`retry` fields are skipped. Leaving the loop early cancels
 * the body, which closes the connection.
 * @param {ReadableStream<Uint8Array>} body
 */
export async function* readServerSentEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  let data = [];
  let event = "message";
  let finished = false;
  try {
    while (!finished) {
      const { value, done } = await reader.read();
      finished = done;
      let text = pending + (done ? decoder.decode() : decoder.decode(value, { stream: true }));
      // A CR at the end may be the first half of a CRLF: keep it until the next read.
      const heldCr = !done && text.endsWith("\r") ? "\r" : "";
      if (heldCr !== "") text = text.slice(0, -1);
      const lines = text.split(/\r\n|\r|\n/);
      pending = (done ? "" : (lines.pop() ?? "")) + heldCr;
      for (const line of lines) {
        if (line === "") {
          if (data.length > 0) yield { event, data: data.join("\n") };
          data = [];
          event = "message";
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const fieldValue = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(fieldValue);
        else if (field === "event") event = fieldValue;
      }
    }
    if (data.length > 0) yield { event, data: data.join("\n") };
  } finally {
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

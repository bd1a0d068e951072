/**
 * A client that walks away mid-stream: open a streaming chat completion on a connection
 * of its own, read until the first content delta, then destroy the socket (as a browser
 * tab closed or a killed `curl` would), without reading the rest or saying goodbye.
 */
import http from "node:http";

export interface AbandonRequest {
  readonly url: string;
  readonly content: string;
  readonly maxTokens: number;
  readonly seed: number;
}

/** Resolves true once the connection was cut after a content delta, false if the stream ended first. */
export function abandonStream(request: AbandonRequest): Promise<boolean> {
  const body = JSON.stringify({
    model: "bench",
    messages: [{ role: "user", content: request.content }],
    max_tokens: request.maxTokens,
    temperature: 0.8,
    seed: request.seed,
    stream: true,
  });
  return new Promise((resolve, reject) => {
    let cut = false;
    const outgoing = http.request(`${request.url}/v1/chat/completions`, {
      method: "POST",
      agent: false,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
    });
    outgoing.on("error", (error) => {
      if (!cut) reject(error);
    });
    outgoing.on("response", (incoming) => {
      if (incoming.statusCode !== 200) {
        reject(new Error(`HTTP ${incoming.statusCode}`));
        incoming.resume();
        return;
      }
      let buffer = "";
      incoming.setEncoding("utf8");
      incoming.on("data", (text: string) => {
        if (cut) return;
        buffer += text;
        let boundary: number;
        while ((boundary = buffer.indexOf("\n\n")) !== -1) {
          const event = buffer.slice(0, boundary).replace(/^data: ?/, "");
          buffer = buffer.slice(boundary + 2);
          if (event === "[DONE]") continue;
          const chunk = JSON.parse(event) as { choices?: Array<{ delta?: { content?: string | null } }> };
          const content = chunk.choices?.[0]?.delta?.content;
          if (typeof content === "string" && content.length > 0) {
            cut = true;
            outgoing.destroy();
            resolve(true);
            return;
          }
        }
      });
      incoming.on("error", (error) => {
        if (!cut) reject(error);
      });
      incoming.on("end", () => {
        if (!cut) resolve(false);
      });
    });
    outgoing.end(body);
  });
}

/** One streaming chat completion, timed from the client: time to first token and decode rate. */

export interface StreamTiming {
  /** From sending the request to the first content delta. */
  readonly timeToFirstTokenMs: number;
  /** Content deltas received (one per token on both servers measured). */
  readonly chunks: number;
  readonly completionTokens: number;
  /** `usage.prompt_tokens` as the server counted it (NaN when it sent no usage). */
  readonly promptTokens: number;
  /** Tokens after the first, over the time between the first and the last delta. */
  readonly decodeTokensPerSecond: number;
  readonly totalMs: number;
}

export interface StreamRequest {
  readonly url: string;
  readonly model: string;
  readonly messages: ReadonlyArray<{ role: string; content: string }>;
  readonly maxTokens: number;
  readonly extra?: Record<string, unknown>;
}

export async function timeStream(request: StreamRequest): Promise<StreamTiming> {
  const started = performance.now();
  const response = await fetch(`${request.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: request.model,
      messages: request.messages,
      max_tokens: request.maxTokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
      ...request.extra,
    }),
  });
  if (!response.ok || response.body === null) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  const decoder = new TextDecoder();
  let buffer = "";
  let first = 0;
  let last = 0;
  let chunks = 0;
  let completionTokens = 0;
  let promptTokens = Number.NaN;
  for await (const bytes of response.body) {
    buffer += decoder.decode(bytes, { stream: true });
    let boundary: number;
    while ((boundary = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, boundary).replace(/^data: ?/, "");
      buffer = buffer.slice(boundary + 2);
      if (event === "[DONE]") continue;
      const chunk = JSON.parse(event) as { choices?: Array<{ delta?: { content?: string | null } }>; usage?: { completion_tokens: number; prompt_tokens: number } };
      const content = chunk.choices?.[0]?.delta?.content;
      if (typeof content === "string" && content.length > 0) {
        const now = performance.now();
        if (chunks === 0) first = now;
        last = now;
        chunks += 1;
      }
      if (chunk.usage !== undefined && chunk.usage !== null) {
        completionTokens = chunk.usage.completion_tokens;
        promptTokens = chunk.usage.prompt_tokens;
      }
    }
  }
  const decodeTokens = Math.max(completionTokens, chunks) - 1;
  return {
    timeToFirstTokenMs: first - started,
    chunks,
    completionTokens,
    promptTokens,
    decodeTokensPerSecond: decodeTokens > 0 && last > first ? (decodeTokens * 1000) / (last - first) : Number.NaN,
    totalMs: performance.now() - started,
  };
}

export function median(values: readonly number[]): number {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** One non-streaming chat completion, for benchmarks that need the server busy, not timed. */

export interface ChatReply {
  readonly content: string;
  readonly completionTokens: number;
}

export async function chat(url: string, content: string, maxTokens: number, seed = 1): Promise<ChatReply> {
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "bench", messages: [{ role: "user", content }], max_tokens: maxTokens, temperature: 0.8, seed }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${text}`);
  const body = JSON.parse(text) as { choices?: Array<{ message?: { content?: string | null } }>; usage?: { completion_tokens?: number } };
  return { content: body.choices?.[0]?.message?.content ?? "", completionTokens: body.usage?.completion_tokens ?? 0 };
}

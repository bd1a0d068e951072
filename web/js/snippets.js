// "Copy as curl" and "Copy as code": the exact request the playground sends, written as
// the seed's curl example (same flags, same order) and as a call with the `openai` SDK.
// The key is never written into a snippet: both read it from $YOUR_API_KEY.

/** Quotes text for a POSIX shell inside single quotes. */
function shellQuote(text) {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * @param {string} url the chat completions URL, e.g. http://host:8080/model/api/v1/chat/completions
 * @param {object} body the request body, exactly as sent
 */
export function curlCommand(url, body) {
  return [
    `curl -X POST ${JSON.stringify(url)}${body.stream === true ? " -N" : ""} \\`,
    `-H "Authorization: Bearer $YOUR_API_KEY" \\`,
    `-H "Content-Type: application/json" \\`,
    `-d ${shellQuote(JSON.stringify(body, null, 2))}`,
  ].join("\n");
}

/**
 * An ES module for Node.js with the `openai` package (`npm install openai`).
 * @param {string} baseUrl e.g. http://host:8080/model/api/v1
 * @param {object} body
 */
export function openaiCode(baseUrl, body) {
  // JSON is a valid object literal, so the body is written exactly as it is sent.
  const call = `client.chat.completions.create(${JSON.stringify(body, null, 2)})`;
  const head = [
    `import OpenAI from "openai";`,
    ``,
    `const client = new OpenAI({`,
    `  baseURL: ${JSON.stringify(baseUrl)},`,
    `  apiKey: process.env.YOUR_API_KEY,`,
    `});`,
    ``,
  ];
  if (body.stream === true) {
    return [
      ...head,
      `const stream = await ${call};`,
      `for await (const chunk of stream) {`,
      `  process.stdout.write(chunk.choices[0]?.delta?.content ?? "");`,
      `  if (chunk.usage) console.log("\\n", chunk.usage);`,
      `}`,
      ``,
    ].join("\n");
  }
  return [
    ...head,
    `const completion = await ${call};`,
    `console.log(completion.choices[0].message.content);`,
    `console.log(completion.choices[0].finish_reason, completion.usage);`,
    ``,
  ].join("\n");
}

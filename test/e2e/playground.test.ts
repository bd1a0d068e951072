/**
 * The playground at `/` in Debian's chromium, against a real Parley (stories260K, which
 * writes real words) with stored keys: a reply streams in, Stop aborts it and the engine
 * stops, the server's 401 and 400 are shown as it wrote them, and "Copy as curl" / "Copy
 * as code" give commands that work when run. Screenshots go to test-results/.
 *
 * Nothing here asserts how fast anything is: waits poll under generous deadlines.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type { Browser, Page } from "playwright-core";
import { chromiumMissing, clipboardText, launchChromium, openPage, RESULTS_DIR, screenshotBothSizes, startKeyedParley, type KeyedParley, type WatchedPage } from "../helpers/browser.js";
import { STORIES_260K } from "../helpers/models.js";
import { postChat } from "../helpers/parley.js";
import { until } from "../helpers/wait.js";

const run = promisify(execFile);
const skip = chromiumMissing();


/** The reply panel's state: idle, waiting, streaming, done, stopped or error. */
const replyState = (page: Page): Promise<string | null> => page.getAttribute("#reply-panel", "data-state");
/** Page-side check that every id in the document is unique (labels and scripts rely on it). */
const UNIQUE_IDS = "(() => { const ids = [...document.querySelectorAll('[id]')].map((node) => node.id); return ids.length === new Set(ids).size; })()";

/** The reply panel once a request has ended, whichever way. */
const ENDED = '#reply-panel:is([data-state="done"], [data-state="stopped"], [data-state="error"])';
const stat = (page: Page, name: string): Promise<string> => page.locator(`[data-stat="${name}"] dd`).innerText();

describe("the playground", { skip }, () => {
  let keyed: KeyedParley;
  let browser: Browser;
  let watched: WatchedPage;
  let page: Page;
  let secret: string;

  /** Types the key into the header form and waits for the model list it unlocks. */
  async function useKey(key: string): Promise<void> {
    await page.fill("#api-key", key);
    await page.press("#api-key", "Enter");
  }

  async function setParameter(name: string, value: string): Promise<void> {
    await page.fill(`#${name}`, value);
  }

  async function sendAndWait(): Promise<string | null> {
    await page.click("#send");
    await page.waitForSelector(ENDED);
    return replyState(page);
  }

  before(async () => {
    keyed = await startKeyedParley(STORIES_260K, ["alice"]);
    secret = keyed.keys.alice?.secret ?? "";
    browser = await launchChromium();
    watched = await openPage(browser, keyed.parley.url);
    page = watched.page;
    await page.goto(`${keyed.parley.url}/`);
    await useKey(secret);
    await page.waitForSelector('#model option[value="test-model"]', { state: "attached" });
  });
  after(async () => {
    await browser?.close();
    await keyed?.parley.close();
  });

  test("shows every seed parameter with its default and range", async () => {
    assert.equal(await page.inputValue("#temperature"), "0.7");
    assert.equal(await page.innerText("#temperature-hint"), "default 0.7 · range [0, 1]");
    assert.equal(await page.innerText("#top_p-hint"), "default 0.7 · range (0, 1]");
    assert.equal(await page.innerText("#max_tokens-hint"), "default 200 · range [1, 4096]");
    assert.equal(await page.innerText("#presence_penalty-hint"), "default 0 · range [-2, 2]");
    assert.equal(await page.innerText("#frequency_penalty-hint"), "default 0 · range [-2, 2]");
    assert.match(await page.innerText("#stop-hint"), /up to 4/);
    assert.match(await page.innerText("#stream-hint"), /default false/);
    assert.equal(await page.evaluate<boolean>(UNIQUE_IDS), true, "no id is used twice");
    // Every control has a label a screen reader announces.
    for (const id of ["model", "system-prompt", "temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "stop", "stream", "api-key"]) {
      assert.equal(await page.locator(`label[for="${id}"]`).count(), 1, `label for #${id}`);
    }
  });

  test("a streamed reply grows as chunks arrive, then shows finish, usage and speed", async () => {
    await setParameter("max_tokens", "400");
    // Record the reply's length at every DOM change, with the panel's state at that moment.
    await page.evaluate(`
      const reply = document.getElementById("reply");
      const panel = document.getElementById("reply-panel");
      window.seenLengths = [];
      new MutationObserver(() => window.seenLengths.push({ length: reply.textContent.length, state: panel.dataset.state }))
        .observe(reply, { childList: true, characterData: true, subtree: true });
    `);
    // Sent from the keyboard: Ctrl+Enter in the message field.
    await page.focus("#messages textarea");
    await page.keyboard.press("Control+Enter");
    await page.waitForSelector('#reply-panel[data-state="done"]');
    const seen = await page.evaluate<Array<{ length: number; state: string }>>("window.seenLengths");
    const whileStreaming = [...new Set(seen.filter((entry) => entry.state === "streaming").map((entry) => entry.length))];
    assert.ok(whileStreaming.length >= 2, `the reply grew in at least two steps before it completed (saw ${JSON.stringify(whileStreaming)})`);
    assert.deepEqual(whileStreaming, [...whileStreaming].sort((a, b) => a - b), "it only grew");
    const text = await page.innerText("#reply");
    assert.ok(text.length > (whileStreaming[0] ?? 0));
    assert.match(text, /[a-z]{3,}/i, "real words from stories260K");
    assert.match(await stat(page, "finish_reason"), /^"(stop|length)"$/);
    assert.equal(await stat(page, "stop_reason"), "null");
    const completion = Number((await stat(page, "completion_tokens")).replace(/\D/g, ""));
    assert.ok(completion > 0 && completion <= 400, `completion tokens ${completion}`);
    assert.match(await stat(page, "ttft"), /^\d[\d.,]* m?s$/);
    assert.match(await stat(page, "tokens_per_second"), /^\d/);
    assert.match(await stat(page, "request_id"), /\S/);
    // The reply can be carried into the conversation for a follow-up turn.
    await page.click("#append-reply");
    assert.equal(await page.locator("#messages .turn").count(), 3);
    assert.equal(await page.locator("#messages .turn").nth(1).locator("select").inputValue(), "assistant");
    assert.equal(await page.locator("#messages .turn:nth-child(3) textarea:focus").count(), 1, "the new user turn has the focus");
    await page.fill("#messages .turn:nth-child(3) textarea", "And then?");
    await screenshotBothSizes(page, "playground");
  });

  test("Stop aborts a long generation and the engine stops generating", async () => {
    // Back to one short turn, so that the prompt plus 1900 tokens fits the 2048-token context.
    await page.click('#messages button[aria-label="Remove turn 3"]');
    await page.click('#messages button[aria-label="Remove turn 2"]');
    assert.equal(await page.locator("#messages .turn").count(), 1);
    await setParameter("max_tokens", "1900");
    await page.click("#send");
    await page.waitForSelector('#reply:not(:empty), #reply-panel:not([data-state="waiting"])');
    assert.equal(await replyState(page), "streaming", await page.innerText("#reply-panel"));
    await page.click("#stop-generation");
    await page.waitForSelector('#reply-panel[data-state="stopped"]');
    assert.match(await page.innerText("#reply-status"), /Stopped/);
    assert.equal(await stat(page, "finish_reason"), "— (stopped)");
    await until(() => keyed.parley.backend.activity().running === 0, "the engine's running requests to drop to 0");
    const requestId = await stat(page, "request_id");
    let row: { outcome: string; status: number; completionTokens: number } | undefined;
    await until(async () => {
      row = (await keyed.parley.access.store.recentRequests(10)).find((entry) => entry.requestId === requestId);
      return row !== undefined;
    }, "the stopped request's ledger row");
    assert.equal(row?.outcome, "abandoned");
    assert.equal(row?.status, 499);
    assert.ok((row?.completionTokens ?? 0) < 1900, "the engine stopped before max_tokens");
    await setParameter("max_tokens", "200");
  });

  test("a stop string typed in the stop field ends the reply, and stop_reason names it", async () => {
    await page.fill("#stop", ".");
    assert.equal(await sendAndWait(), "done");
    assert.equal(await stat(page, "finish_reason"), '"stop"');
    assert.equal(await stat(page, "stop_reason"), '"."');
    assert.ok(!(await page.innerText("#reply")).includes("."), "the stop string is not in the reply");
    await page.fill("#stop", "");
  });

  test("a wrong key's 401 is shown as the server wrote it", async () => {
    const wrong = "sk-pl-this-key-does-not-exist";
    await useKey(wrong);
    await page.waitForSelector('#model-status:has-text("Could not list models")');
    assert.equal(await sendAndWait(), "error");
    const expected = (await (await postChat(keyed.parley, { model: "test-model", messages: [] }, { apiKey: wrong })).json()) as {
      error: { message: string; code: string };
    };
    assert.equal(await page.innerText("#error .error-message"), expected.error.message);
    const details = await page.innerText("#error .error-details");
    assert.match(details, /status\s+401/);
    assert.match(details, /code\s+invalid_api_key/);
    await useKey(secret);
    await page.waitForSelector('#model-status:has-text("model served")');
  });

  test("an out-of-range temperature is sent as typed and the server's 400 is shown", async () => {
    await setParameter("temperature", "1.5");
    assert.equal(await sendAndWait(), "error");
    const expected = (await (
      await postChat(keyed.parley, { model: "test-model", messages: [{ role: "user", content: "x" }], temperature: 1.5 }, { apiKey: secret })
    ).json()) as { error: { message: string } };
    assert.equal(await page.innerText("#error .error-message"), expected.error.message);
    const details = await page.innerText("#error .error-details");
    assert.match(details, /status\s+400/);
    assert.match(details, /code\s+invalid_value/);
    assert.match(details, /param\s+temperature/);
    await setParameter("temperature", "0.7");
  });

  test("Copy as curl gives the seed-style command, and it succeeds when run", async () => {
    await page.uncheck("#stream");
    await setParameter("max_tokens", "16");
    await page.click("#copy-curl");
    await page.waitForSelector('#copy-status:has-text("Copied")');
    const command = await clipboardText(page);
    assert.equal(command, await page.innerText("#snippet"));
    const lines = command.split("\n");
    assert.equal(lines[0], `curl -X POST "${keyed.parley.url}/model/api/v1/chat/completions" \\`);
    assert.equal(lines[1], `-H "Authorization: Bearer $YOUR_API_KEY" \\`);
    assert.equal(lines[2], `-H "Content-Type: application/json" \\`);
    assert.ok(!command.includes(secret), "the key itself is never in the snippet");
    // Run exactly what was copied; a private curlrc adds only the status line to curl's output.
    const curlHome = mkdtempSync(path.join(os.tmpdir(), "parley-curl-"));
    try {
      writeFileSync(path.join(curlHome, ".curlrc"), 'silent\nshow-error\nwrite-out = "\\nHTTP_STATUS %{http_code}\\n"\n');
      const { stdout } = await run("bash", ["-c", command], { env: { ...process.env, YOUR_API_KEY: secret, CURL_HOME: curlHome } });
      const [body, status] = stdout.trimEnd().split("\nHTTP_STATUS ");
      assert.equal(status, "200", stdout);
      const completion = JSON.parse(body ?? "") as { object: string; model: string; choices: Array<{ message: { content: string } }> };
      assert.equal(completion.object, "chat.completion");
      assert.equal(completion.model, "test-model");
      assert.ok((completion.choices[0]?.message.content.length ?? 0) > 0);
    } finally {
      rmSync(curlHome, { recursive: true, force: true });
    }
  });

  test("Copy as code gives an openai SDK program that runs", async () => {
    await page.check("#stream");
    await page.click("#copy-code");
    await page.waitForSelector('#copy-status:has-text("Copied")');
    const code = await clipboardText(page);
    assert.match(code, /^import OpenAI from "openai";/);
    assert.ok(code.includes(`baseURL: "${keyed.parley.url}/model/api/v1"`));
    // Written inside the project so that `import "openai"` resolves to the devDependency.
    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = path.join(RESULTS_DIR, "copied-openai-code.mjs");
    writeFileSync(file, code);
    const { stdout } = await run(process.execPath, [file], { env: { ...process.env, YOUR_API_KEY: secret } });
    assert.match(stdout, /[a-z]{3,}/i);
    assert.match(stdout, /completion_tokens/, "the stream's usage chunk was printed");
    await setParameter("max_tokens", "200");
  });

  test("the page made no request to any other origin and threw no error", () => {
    assert.deepEqual(watched.foreignRequests, []);
    assert.deepEqual(watched.pageErrors, []);
  });
});

/**
 * The dashboard at `/dashboard` in Debian's chromium, against a real Parley
 * (stories260K) with two stored keys: it asks for the admin token, shows the server's own
 * error for a wrong one, then shows the requests just made (by the playground in the same
 * browser and by API clients), usage by key and by model as charts, live load and the
 * model's state, and picks up new requests by itself. Screenshots go to test-results/.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import type { Browser, Page } from "playwright-core";
import {
  ADMIN_TOKEN,
  chromiumMissing,
  launchChromium,
  openPage,
  screenshotBothSizes,
  startKeyedParley,
  type KeyedParley,
  type WatchedPage,
} from "../helpers/browser.js";
import { STORIES_260K } from "../helpers/models.js";
import { postChat } from "../helpers/parley.js";

const skip = chromiumMissing();
const DEADLINE_MS = 20_000;

const HELLO = { model: "test-model", messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 24 };

describe("the dashboard", { skip }, () => {
  let keyed: KeyedParley;
  let browser: Browser;
  let watched: WatchedPage;
  let page: Page;
  /** Request ids of what was sent before the dashboard opened. */
  const made: string[] = [];

  async function apiRequest(key: string, body: Record<string, unknown> = HELLO): Promise<string> {
    const response = await postChat(keyed.parley, body, { apiKey: key });
    await response.arrayBuffer();
    const requestId = response.headers.get("x-request-id");
    assert.ok(requestId !== null);
    return requestId;
  }

  before(async () => {
    keyed = await startKeyedParley(STORIES_260K, ["alice", "bob"]);
    browser = await launchChromium();
    watched = await openPage(browser, keyed.parley.url);
    page = watched.page;
    // One request from the playground in this browser, as alice…
    await page.goto(`${keyed.parley.url}/`);
    await page.fill("#api-key", keyed.keys.alice?.secret ?? "");
    await page.press("#api-key", "Enter");
    await page.waitForSelector('#model option[value="test-model"]', { state: "attached" });
    await page.fill("#max_tokens", "32");
    await page.click("#send");
    await page.waitForSelector('#reply-panel[data-state="done"]');
    made.push(await page.locator('[data-stat="request_id"] dd').innerText());
    // …and three from API clients as bob, one of them refused (400).
    const bob = keyed.keys.bob?.secret ?? "";
    made.push(await apiRequest(bob), await apiRequest(bob), await apiRequest(bob, { ...HELLO, top_p: 0 }));
  });
  after(async () => {
    await browser?.close();
    await keyed?.parley.close();
  });

  test("asks for the admin token and shows the server's error for a wrong one", async () => {
    await page.goto(`${keyed.parley.url}/dashboard`);
    assert.match(await page.innerText("#updated"), /admin token/);
    assert.equal(await page.locator("#admin-token:focus").count(), 1, "the token field has the focus");
    await page.fill("#admin-token", "not-the-admin-token");
    await page.press("#admin-token", "Enter");
    await page.waitForSelector("#error:not([hidden])");
    assert.equal(await page.innerText("#error .error-message"), "This token is not the admin token.");
    assert.match(await page.innerText("#error .error-details"), /status\s+403/);
  });

  test("shows the requests just made, usage by key and model, the model and its load", async () => {
    await page.fill("#admin-token", ADMIN_TOKEN);
    await page.press("#admin-token", "Enter");
    for (const requestId of made) await page.waitForSelector(`#recent tr[data-request-id="${requestId}"]`);
    assert.equal(await page.locator("#error").isHidden(), true);
    const refused = page.locator(`#recent tr[data-request-id="${made[3]}"]`);
    // Refused while its body was read, before its model was: no model, no tokens.
    assert.match(await refused.innerText(), /bob\s+—\s+400\s+rejected/);
    const fromPlayground = page.locator(`#recent tr[data-request-id="${made[0]}"]`);
    assert.match(await fromPlayground.innerText(), /alice\s+test-model\s+200\s+completed\s+(stop|length)/);

    const models = await page.innerText("#models tbody");
    assert.match(models, /test-model\s+ready/);
    assert.equal(await page.innerText("#load-running"), "0");
    assert.equal(await page.innerText("#load-sequences"), "0 / 1");

    assert.equal(await page.locator("#charts svg.chart").count(), 4);
    const requestsByKey = (await page.locator("#charts figure", { hasText: "Requests by key" }).locator("svg.chart").getAttribute("aria-label")) ?? "";
    assert.match(requestsByKey, /^Requests by key: 4 in total/);
    assert.match(requestsByKey, /bob \(key_[0-9a-f]+\) 3/);
    assert.match(requestsByKey, /alice \(key_[0-9a-f]+\) 1/);
    const tokensByModel = (await page.locator("#charts figure", { hasText: "Tokens by model" }).locator("svg.chart").getAttribute("aria-label")) ?? "";
    assert.match(tokensByModel, /test-model [1-9]/);
    assert.ok((await page.locator("#charts rect").count()) > 0, "bars are drawn");
  });

  test("refreshes by itself: new requests and live tokens per second appear without a click", async () => {
    const requestId = await apiRequest(keyed.keys.alice?.secret ?? "");
    await page.waitForSelector(`#recent tr[data-request-id="${requestId}"]`, { timeout: DEADLINE_MS });
    // Keep the engine busy until a refresh measures its rate (a rate over the last few seconds).
    const deadline = Date.now() + DEADLINE_MS;
    let rate = "0";
    while (Date.now() < deadline) {
      await apiRequest(keyed.keys.alice?.secret ?? "", { ...HELLO, max_tokens: 1500 });
      rate = await page.innerText("#load-tps");
      if (rate !== "0" && rate !== "—") break;
      await sleep(50);
    }
    assert.ok(Number(rate.replace(/[^\d.]/g, "")) > 0, `tokens per second shown: ${rate}`);
    assert.equal(await page.locator("#load-tps-trend polyline").count(), 1, "the rate's trend is drawn");
  });

  test("a window can be chosen, and screenshots are taken", async () => {
    await page.selectOption("#window", "15m");
    await page.waitForSelector('#usage-range:has-text("1 minute buckets")');
    await screenshotBothSizes(page, "dashboard");
    assert.equal(
      await page.evaluate<boolean>("(() => { const ids = [...document.querySelectorAll('[id]')].map((node) => node.id); return ids.length === new Set(ids).size; })()"),
      true,
      "no id is used twice",
    );
    assert.deepEqual(watched.foreignRequests, []);
    assert.deepEqual(watched.pageErrors, []);
  });
});

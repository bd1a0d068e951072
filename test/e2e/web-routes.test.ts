/**
 * The web pages and the dashboard API over HTTP, without a browser: pages and assets are
 * public and self-contained, anything else under /web/ is a 404 in the one envelope, and
 * `GET /admin/v1/dashboard` needs the admin token and reports usage, load and requests.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { ADMIN_TOKEN, startKeyedParley, type KeyedParley } from "../helpers/browser.js";
import { STORIES_260K } from "../helpers/models.js";
import { postChat } from "../helpers/parley.js";

interface DashboardBody {
  object: string;
  window: { name: string; bucket_seconds: number; available: string[] };
  usage: {
    buckets: string[];
    by_key: Array<{ group: string; name: string | null; requests: number[]; total_tokens: number[] }>;
    by_model: Array<{ group: string; requests: number[]; total_tokens: number[] }>;
  };
  load: {
    running: number;
    waiting: number;
    models: Array<{ id: string; state: string; running: number; sequences: { total: number; busy: number; free: number } | null }>;
  };
  recent: Array<{ request_id: string; key_name: string | null; status: number; outcome: string; completion_tokens: number }>;
}

const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0);

describe("web routes", () => {
  let keyed: KeyedParley;
  let url: string;

  before(async () => {
    keyed = await startKeyedParley(STORIES_260K, ["alice"]);
    url = keyed.parley.url;
  });
  after(async () => {
    await keyed?.parley.close();
  });

  test("the pages and their assets load without a key, from Parley itself", async () => {
    for (const [page, script] of [["/", "/web/js/playground.js"], ["/dashboard", "/web/js/dashboard.js"]] as const) {
      const response = await fetch(`${url}${page}`);
      assert.equal(response.status, 200, page);
      assert.match(response.headers.get("content-type") ?? "", /^text\/html/);
      assert.match(response.headers.get("content-security-policy") ?? "", /default-src 'self'/);
      const html = await response.text();
      assert.ok(html.includes(`src="${script}"`), `${page} loads ${script}`);
      // Self-contained: no absolute URL to anywhere else (fonts, CDNs, analytics).
      assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
      const asset = await fetch(`${url}${script}`);
      assert.equal(asset.status, 200);
      assert.match(asset.headers.get("content-type") ?? "", /^text\/javascript/);
    }
    const css = await fetch(`${url}/web/css/base.css`);
    assert.equal(css.status, 200);
    assert.match(css.headers.get("content-type") ?? "", /^text\/css/);
  });

  test("an unchanged asset is a 304 for its ETag", async () => {
    const first = await fetch(`${url}/web/js/api.js`);
    const etag = first.headers.get("etag");
    assert.ok(etag !== null);
    const second = await fetch(`${url}/web/js/api.js`, { headers: { "if-none-match": etag } });
    assert.equal(second.status, 304);
  });

  test("nothing outside web/ is served, and a missing asset is a 404 envelope", async () => {
    // (fetch itself resolves "/web/../x" and "/web/%2e%2e/x" to "/x", which is not a web route.)
    for (const path of ["/web/missing.js", "/web/..%2fpackage.json", "/web/js%2f..%2f..%2fpackage.json", "/web/.hidden", "/web/playground.txt"]) {
      const response = await fetch(`${url}${path}`);
      assert.equal(response.status, 404, path);
      const body = (await response.json()) as { error: { code: string } };
      assert.equal(body.error.code, "not_found", path);
    }
  });

  test("the parameters endpoint gives the seed's defaults and the deployment's ranges", async () => {
    const response = await fetch(`${url}/web/parameters.json`);
    assert.equal(response.status, 200);
    const body = (await response.json()) as { defaults: Record<string, unknown>; ranges: Record<string, { min: number; max: number }> };
    assert.deepEqual(body.defaults, { temperature: 0.7, top_p: 0.7, max_tokens: 200, presence_penalty: 0, frequency_penalty: 0, stream: false });
    assert.deepEqual(body.ranges.temperature, { min: 0, max: 1 });
  });

  test("the API behind the pages still needs its key or token", async () => {
    assert.equal((await fetch(`${url}/v1/models`)).status, 401);
    const dashboard = await fetch(`${url}/admin/v1/dashboard`);
    assert.equal(dashboard.status, 401);
    const apiKey = await fetch(`${url}/admin/v1/dashboard`, { headers: { authorization: `Bearer ${keyed.keys.alice?.secret}` } });
    assert.equal(apiKey.status, 403, "an ordinary key is not the admin token");
  });

  test("the dashboard reports usage by key and model, load, and recent requests", async () => {
    const secret = keyed.keys.alice?.secret ?? "";
    const ok = await postChat(keyed.parley, { model: "test-model", messages: [{ role: "user", content: "Hi" }], max_tokens: 5 }, { apiKey: secret });
    assert.equal(ok.status, 200);
    const bad = await postChat(keyed.parley, { model: "test-model", messages: [{ role: "user", content: "Hi" }], temperature: 3 }, { apiKey: secret });
    assert.equal(bad.status, 400);
    const response = await fetch(`${url}/admin/v1/dashboard?window=15m&recent=5`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(response.status, 200);
    const body = (await response.json()) as DashboardBody;
    assert.equal(body.object, "dashboard");
    assert.equal(body.window.name, "15m");
    assert.equal(body.window.bucket_seconds, 60);
    assert.deepEqual(body.window.available, ["15m", "1h", "6h", "24h", "7d", "30d"]);
    assert.equal(body.usage.buckets.length, 15);
    const alice = body.usage.by_key.find((series) => series.group === keyed.keys.alice?.id);
    assert.equal(alice?.name, "alice");
    assert.equal(sum(alice?.requests ?? []), 2);
    assert.ok(sum(alice?.total_tokens ?? []) > 0);
    // The 400 was refused before its model was read: it counts for the key, under no model.
    const byModel = Object.fromEntries(body.usage.by_model.map((series) => [series.group, sum(series.requests)]));
    assert.deepEqual(byModel, { "test-model": 1, "(none)": 1 });
    assert.deepEqual(
      body.recent.map((row) => [row.request_id, row.status, row.outcome, row.key_name]),
      [
        [bad.headers.get("x-request-id"), 400, "rejected", "alice"],
        [ok.headers.get("x-request-id"), 200, "completed", "alice"],
      ],
    );
    assert.equal(body.load.running, 0);
    assert.deepEqual(body.load.models.map((entry) => [entry.id, entry.state, entry.sequences]), [["test-model", "ready", { total: 1, busy: 0, free: 1 }]]);
  });

  test("an unknown window or recent count is a 400 naming the param", async () => {
    for (const [query, param] of [["window=2y", "window"], ["recent=500", "recent"], ["recent=-1", "recent"]] as const) {
      const response = await fetch(`${url}/admin/v1/dashboard?${query}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal(response.status, 400, query);
      const body = (await response.json()) as { error: { param: string } };
      assert.equal(body.error.param, param);
    }
  });
});

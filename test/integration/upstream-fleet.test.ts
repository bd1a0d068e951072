/**
 * Parley in front of a fleet of real Parleys: three `parley serve` processes with the
 * embedded engine, each on its own port, behind a gateway Parley that also serves a local
 * model. Covers the seed's shape and exact usage through the gateway, prefix affinity
 * proven by the upstreams' own cached-token counts, and failover when an upstream process
 * is killed under load.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertCompletionShape, chunksOf, streamedText, type Chunk, type Completion } from "../helpers/chat-assertions.js";
import { spawnUpstreamParley, startGateway, type RunningGateway, type UpstreamParley } from "../helpers/gateway.js";
import { STORIES_260K } from "../helpers/models.js";
import { postChat, readEvents } from "../helpers/parley.js";
import { until } from "../helpers/wait.js";

const UPSTREAM_KEY = "upstream-secret-key-42";

interface PoolView {
  model: string;
  upstreams: Array<{ url: string; state: string; requests: number; in_flight: number; failures: number; last_error: string | null }>;
}

function fleetYaml(upstreams: readonly UpstreamParley[], balancing: string, extra = ""): string {
  return [
    "models:",
    "  - name: local-stories",
    "    backend: local",
    `    model: ${STORIES_260K}`,
    "  - name: stories",
    "    backend: upstream",
    "    upstream_model: stories260K",
    `    balancing: ${balancing}`,
    "    health: { interval_ms: 200, failure_threshold: 2, backoff_ms: 60000 }",
    "    upstreams:",
    ...upstreams.flatMap((upstream) => [`      - url: ${upstream.url}`, "        api_key: ${UPSTREAM_KEY}"]),
    extra,
  ].join("\n");
}

let upstreams: UpstreamParley[] = [];
before(async () => {
  upstreams = await Promise.all([0, 1, 2].map(() => spawnUpstreamParley(STORIES_260K, ["--api-key", UPSTREAM_KEY, "--parallel", "2", "--model-name", "stories260K"])));
});
after(async () => {
  await Promise.all(upstreams.map((upstream) => upstream.stop()));
});

async function completion(target: { url: string }, body: Record<string, unknown>, apiKey?: string): Promise<Completion> {
  const response = await postChat(target, body, apiKey === undefined ? {} : { apiKey });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text) as Completion;
}

describe("a gateway over three Parleys, least outstanding", () => {
  let gateway: RunningGateway;
  before(async () => {
    gateway = await startGateway(fleetYaml(upstreams, "least_outstanding"), { env: { UPSTREAM_KEY } });
  });
  after(() => gateway.close());

  test("/v1/models lists the local and the upstream model side by side", async () => {
    const response = await fetch(`${gateway.url}/v1/models`);
    const body = (await response.json()) as { data: Array<{ id: string; owned_by: string }> };
    assert.deepEqual(body.data.map((model) => [model.id, model.owned_by]), [
      ["local-stories", "parley"],
      ["stories", "parley-upstream"],
    ]);
  });

  test("a non-streamed answer has the seed's shape, Parley's id and the upstream's exact usage", async () => {
    const body = { messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 12, temperature: 0 };
    const viaGateway = await completion(gateway, { ...body, model: "stories" });
    assertCompletionShape(viaGateway, "stories");
    const direct = await completion({ url: upstreams[0]!.url.replace(/\/v1$/, "") }, { ...body, model: "stories260K" }, UPSTREAM_KEY);
    assert.equal(viaGateway.choices[0]?.message.content, direct.choices[0]?.message.content, "greedy text relayed unchanged");
    assert.equal(viaGateway.usage.prompt_tokens, direct.usage.prompt_tokens);
    assert.equal(viaGateway.usage.completion_tokens, direct.usage.completion_tokens);
    assert.notEqual(viaGateway.id, direct.id);
  });

  test("a streamed answer relays every delta, then finish, usage and [DONE]", async () => {
    const response = await postChat(gateway, {
      model: "stories",
      messages: [{ role: "user", content: "The little dog" }],
      max_tokens: 10,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    assert.equal(response.status, 200);
    const chunks = chunksOf(await readEvents(response)) as Chunk[];
    const usageChunk = chunks.at(-1) as unknown as { choices: unknown[]; usage: { completion_tokens: number; prompt_tokens: number } };
    assert.deepEqual(usageChunk.choices, []);
    assert.equal(usageChunk.usage.completion_tokens, 10);
    const ids = new Set(chunks.map((chunk) => chunk.id));
    assert.equal(ids.size, 1, "one id for the whole stream");
    assert.equal(chunks[0]?.choices[0]?.delta.role, "assistant");
    assert.equal(chunks.at(-2)?.choices[0]?.finish_reason, "length");
    assert.ok(streamedText(chunks).length > 0);
  });

  test("the local model still answers beside the pool", async () => {
    const answer = await completion(gateway, { model: "local-stories", messages: [{ role: "user", content: "Hi" }], max_tokens: 4 });
    assertCompletionShape(answer, "local-stories");
  });

  test("/admin/v1/upstreams shows each upstream's state, traffic and latency, without its credentials", async () => {
    const view = await gateway.admin<{ data: PoolView[] }>("/admin/v1/upstreams");
    assert.equal(view.data.length, 1);
    const pool = view.data[0]!;
    assert.equal(pool.model, "stories");
    assert.deepEqual(pool.upstreams.map((upstream) => upstream.url), upstreams.map((upstream) => upstream.url));
    for (const upstream of pool.upstreams) assert.equal(upstream.state, "closed");
    assert.ok(pool.upstreams.reduce((sum, upstream) => sum + upstream.requests, 0) >= 2);
    assert.ok(!JSON.stringify(view).includes(UPSTREAM_KEY), "the upstream API key is never shown");
  });
});

describe("prefix affinity over three Parleys", () => {
  let gateway: RunningGateway;
  before(async () => {
    gateway = await startGateway(fleetYaml(upstreams, "prefix_affinity"), { env: { UPSTREAM_KEY } });
  });
  after(() => gateway.close());

  test("every turn of a conversation goes to the upstream that holds its prefix, which reports it cached", async () => {
    const system = "You are a storyteller. Tell short, kind stories about animals in a forest, with a happy ending every time.";
    const messages: Array<{ role: string; content: string }> = [{ role: "system", content: system }, { role: "user", content: "Once upon a time there was a fox." }];
    const before = await gateway.admin<{ data: PoolView[] }>("/admin/v1/upstreams");
    const cached: number[] = [];
    for (let turn = 0; turn < 4; turn++) {
      const answer = await completion(gateway, { model: "stories", messages, max_tokens: 8, temperature: 0 });
      cached.push(answer.usage.prompt_tokens_details?.cached_tokens ?? 0);
      // Conversations in between, which least-outstanding would spread over the fleet anyway.
      await completion(gateway, { model: "stories", messages: [{ role: "user", content: `An unrelated question number ${turn}, about the weather today in a small town.` }], max_tokens: 4 });
      messages.push({ role: "assistant", content: answer.choices[0]?.message.content ?? "" }, { role: "user", content: `And then, part ${turn + 2}?` });
    }
    assert.equal(cached[0], 0, "the first turn is cold");
    for (const [turn, count] of cached.entries()) if (turn > 0) assert.ok(count > 20, `turn ${turn + 1} reused the conversation's cache upstream (${count} cached tokens)`);
    const after = await gateway.admin<{ data: PoolView[] }>("/admin/v1/upstreams");
    const served = after.data[0]!.upstreams.map((upstream, index) => upstream.requests - (before.data[0]!.upstreams[index]?.requests ?? 0));
    assert.equal(served.reduce((sum, count) => sum + count, 0), 8);
  });
});

describe("killing an upstream under load", () => {
  let gateway: RunningGateway;
  let victim: UpstreamParley;
  before(async () => {
    victim = await spawnUpstreamParley(STORIES_260K, ["--api-key", UPSTREAM_KEY, "--parallel", "2", "--model-name", "stories260K"]);
    gateway = await startGateway(fleetYaml([upstreams[0]!, victim], "least_outstanding"), { env: { UPSTREAM_KEY } });
  });
  after(async () => {
    await gateway.close();
    await victim.stop();
  });

  test("no request fails that had not started streaming; the dead upstream is ejected", async () => {
    type Outcome = { started: boolean; completed: boolean; error: string | null };
    const outcomes: Outcome[] = [];
    let stop = false;
    const worker = async () => {
      while (!stop) {
        const outcome: Outcome = { started: false, completed: false, error: null };
        outcomes.push(outcome);
        const response = await postChat(gateway, { model: "stories", messages: [{ role: "user", content: "Tell me a long story" }], max_tokens: 200, stream: true });
        if (response.status !== 200) {
          outcome.error = `HTTP ${response.status}: ${await response.text()}`;
          continue;
        }
        outcome.started = true; // the 200 is sent with the first text
        const events = await readEvents(response);
        assert.equal(events.at(-1), "[DONE]", "every stream ends with [DONE]");
        const failure = events.find((event) => typeof event === "object" && event !== null && "error" in event) as { error: { code: string } } | undefined;
        if (failure === undefined) outcome.completed = true;
        else outcome.error = failure.error.code;
      }
    };
    const workers = [worker(), worker(), worker(), worker()];
    await until(() => outcomes.filter((outcome) => outcome.completed).length >= 8, "requests flowing through both upstreams");
    await victim.kill();
    const killedAt = outcomes.length;
    await until(() => outcomes.length >= killedAt + 12, "requests after the kill");
    stop = true;
    await Promise.all(workers);

    const failedBeforeStreaming = outcomes.filter((outcome) => !outcome.started);
    assert.deepEqual(failedBeforeStreaming, [], "a request that had not started streaming never fails");
    for (const outcome of outcomes.filter((outcome) => outcome.error !== null)) assert.equal(outcome.error, "upstream_error", "cut streams end with an error event");
    assert.ok(outcomes.slice(killedAt + 4).every((outcome) => outcome.completed), "after the kill, requests complete on the survivor");
    const view = await gateway.admin<{ data: PoolView[] }>("/admin/v1/upstreams");
    const dead = view.data[0]!.upstreams.find((upstream) => upstream.url === victim.url);
    assert.equal(dead?.state, "open", "the killed upstream is ejected");
    assert.ok(dead?.last_error !== null);
  });
});

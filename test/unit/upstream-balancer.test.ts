import assert from "node:assert/strict";
import { after, test } from "node:test";
import type { PrefixAffinityConfig, UpstreamHealth, UpstreamTimeouts } from "../../src/config/model-file.js";
import { createBalancer, type RoutedPrompt } from "../../src/backends/upstream/balancer.js";
import { prefixBlocks } from "../../src/backends/upstream/prefix-index.js";
import { UpstreamServer } from "../../src/backends/upstream/upstream-server.js";

const timeouts: UpstreamTimeouts = { connectMs: 1000, firstTokenMs: 1000, idleMs: 1000, totalMs: 1000 };
const health: UpstreamHealth = { path: undefined, intervalMs: 0, timeoutMs: 1000, failureThreshold: 3, backoffMs: 1000, maxBackoffMs: 2000 };
const affinity: PrefixAffinityConfig = { minMatch: 0.5, balanceAbs: 2, balanceRel: 1.5, blockChars: 8, maxBlocks: 1000 };

const servers: UpstreamServer[] = [];
let port = 1;

/** An upstream that is never contacted (its pool connects lazily), named by its port. */
function server(weight = 1, inFlight = 0): UpstreamServer {
  const created = new UpstreamServer({ url: `http://127.0.0.1:${port++}/v1`, weight, apiKey: undefined }, timeouts, health);
  for (let request = 0; request < inFlight; request++) created.begin();
  servers.push(created);
  return created;
}

after(async () => {
  await Promise.all(servers.map((created) => created.close()));
});

const noPrompt: RoutedPrompt = { blocks: [], chars: 0 };

function prompt(text: string, config = affinity): RoutedPrompt {
  return { blocks: prefixBlocks(text, config.blockChars), chars: text.length };
}

test("every policy chooses nothing from no candidates", () => {
  for (const policy of ["least_outstanding", "weighted_round_robin", "prefix_affinity"] as const) {
    assert.equal(createBalancer(policy, affinity).choose([], prompt("x".repeat(64))), undefined, policy);
  }
});

test("least outstanding: the fewest in flight per unit of weight", () => {
  const balancer = createBalancer("least_outstanding", affinity);
  const busy = server(1, 3);
  const idle = server(1, 1);
  const busier = server(1, 5);
  for (let pick = 0; pick < 6; pick++) assert.equal(balancer.choose([busy, idle, busier], noPrompt), idle);
  // Weight divides load: 4 in flight on weight 4 (1 each) beats 2 on weight 1.
  const heavy = server(4, 4);
  const light = server(1, 2);
  for (let pick = 0; pick < 4; pick++) assert.equal(balancer.choose([light, heavy], noPrompt), heavy);
});

test("least outstanding: follows in-flight counts as requests begin and end", () => {
  const balancer = createBalancer("least_outstanding", affinity);
  const a = server();
  const b = server();
  a.begin();
  assert.equal(balancer.choose([a, b], noPrompt), b);
  b.begin();
  b.begin();
  assert.equal(balancer.choose([a, b], noPrompt), a);
  b.end();
  b.end();
  assert.equal(balancer.choose([a, b], noPrompt), b);
  a.end();
});

test("least outstanding: ties go round the pool", () => {
  const balancer = createBalancer("least_outstanding", affinity);
  const pool = [server(), server(), server()];
  const picks = Array.from({ length: 6 }, () => balancer.choose(pool, noPrompt));
  assert.deepEqual(new Set(picks.slice(0, 3)), new Set(pool));
  assert.deepEqual(new Set(picks.slice(3)), new Set(pool));
  // Only the tied ones share: one busy server is never picked, the two idle both are.
  const busy = server(1, 1);
  const pair = [busy, server(), server()];
  const shared = Array.from({ length: 6 }, () => balancer.choose(pair, noPrompt));
  assert.ok(!shared.includes(busy));
  assert.equal(new Set(shared).size, 2);
});

test("weighted round robin: weights 2:1 pick A, B, A over and over", () => {
  const balancer = createBalancer("weighted_round_robin", affinity);
  const a = server(2);
  const b = server(1);
  const picks = Array.from({ length: 6 }, () => balancer.choose([a, b], noPrompt));
  assert.deepEqual(picks, [a, b, a, a, b, a]);
});

test("weighted round robin: smooth, as nginx's — weights 5:1:1 give a a b a c a a", () => {
  const balancer = createBalancer("weighted_round_robin", affinity);
  const a = server(5);
  const b = server(1);
  const c = server(1);
  const picks = Array.from({ length: 7 }, () => balancer.choose([a, b, c], noPrompt));
  assert.deepEqual(picks, [a, a, b, a, c, a, a]);
});

test("weighted round robin: shares follow weights exactly over whole rounds, and ignore load", () => {
  const balancer = createBalancer("weighted_round_robin", affinity);
  const a = server(3, 50);
  const b = server(2);
  const c = server(1);
  const counts = new Map<UpstreamServer, number>();
  for (let pick = 0; pick < 600; pick++) {
    const chosen = balancer.choose([a, b, c], noPrompt) as UpstreamServer;
    counts.set(chosen, (counts.get(chosen) ?? 0) + 1);
  }
  assert.deepEqual([counts.get(a), counts.get(b), counts.get(c)], [300, 200, 100]);
});

test("weighted round robin: fractional weights", () => {
  const balancer = createBalancer("weighted_round_robin", affinity);
  const a = server(0.5);
  const b = server(1.5);
  const picks = Array.from({ length: 8 }, () => balancer.choose([a, b], noPrompt));
  assert.equal(picks.filter((pick) => pick === a).length, 2);
  assert.equal(picks.filter((pick) => pick === b).length, 6);
});

test("weighted round robin: a server left out of some choices is not owed them afterwards", () => {
  const balancer = createBalancer("weighted_round_robin", affinity);
  const a = server(2);
  const b = server(1);
  for (let pick = 0; pick < 3; pick++) assert.equal(balancer.choose([b], noPrompt), b);
  // Back in the pool, `a` gets its share from now on, not a burst for the picks it missed.
  const picks = Array.from({ length: 6 }, () => balancer.choose([a, b], noPrompt));
  assert.deepEqual(picks, [a, b, a, a, b, a]);
});

test("prefix affinity: the server that served the longest prefix wins, whichever was recorded first", () => {
  const text = "system: be brief. user: tell me about the weather in paris today";
  const short = prompt(text.slice(0, 16));
  const long = prompt(text.slice(0, 48));
  const ask = prompt(text);
  assert.equal(ask.blocks.length, 8);

  const first = createBalancer("prefix_affinity", affinity);
  const a = server();
  const b = server();
  first.served(a, short);
  first.served(b, long);
  for (let pick = 0; pick < 4; pick++) assert.equal(first.choose([a, b], ask), b);

  const second = createBalancer("prefix_affinity", affinity);
  second.served(b, short);
  second.served(a, long);
  for (let pick = 0; pick < 4; pick++) assert.equal(second.choose([a, b], ask), a);
});

test("prefix affinity: a holder covering enough of the prompt wins over a less loaded server", () => {
  const balancer = createBalancer("prefix_affinity", affinity);
  const holder = server(1, 2);
  const idle = server();
  const text = "a conversation that has been going on for quite some while now";
  balancer.served(holder, prompt(text));
  for (let pick = 0; pick < 4; pick++) assert.equal(balancer.choose([holder, idle], prompt(`${text} and more`)), holder);
});

test("prefix affinity: coverage below minMatch falls back to least outstanding", () => {
  const balancer = createBalancer("prefix_affinity", affinity);
  const holder = server(1, 1);
  const idle = server();
  const shared = "x".repeat(16); // two blocks
  balancer.served(holder, prompt(shared));
  // 16 of 40 characters is 40% < 50%.
  assert.equal(balancer.choose([holder, idle], prompt(shared + "y".repeat(24))), idle);
  // 16 of 32 is exactly 50%: enough.
  assert.equal(balancer.choose([holder, idle], prompt(shared + "y".repeat(16))), holder);
});

test("prefix affinity: a holder overloaded against the idlest — by more than balanceAbs and balanceRel times — loses", () => {
  const text = "z".repeat(64);
  const cases: Array<{ holder: number; idle: number; winner: "holder" | "idle" }> = [
    { holder: 3, idle: 0, winner: "idle" }, // 3 - 0 > 2 and 3 > 0 × 1.5
    { holder: 2, idle: 0, winner: "holder" }, // gap 2 is not more than balanceAbs 2
    { holder: 10, idle: 7, winner: "holder" }, // gap 3 > 2, but 10 is not more than 7 × 1.5
    { holder: 11, idle: 7, winner: "idle" }, // gap 4 > 2 and 11 > 10.5
  ];
  for (const { holder: holderLoad, idle: idleLoad, winner } of cases) {
    const balancer = createBalancer("prefix_affinity", affinity);
    const holder = server(1, holderLoad);
    const idle = server(1, idleLoad);
    balancer.served(holder, prompt(text));
    const chosen = balancer.choose([holder, idle], prompt(text));
    assert.equal(chosen, winner === "holder" ? holder : idle, `holder ${holderLoad} in flight, idlest ${idleLoad}`);
  }
});

test("prefix affinity: a holder left out of the candidates is not chosen", () => {
  const balancer = createBalancer("prefix_affinity", affinity);
  const holder = server();
  const b = server(1, 1);
  const c = server(1, 2);
  const text = "q".repeat(64);
  balancer.served(holder, prompt(text));
  for (let pick = 0; pick < 4; pick++) assert.equal(balancer.choose([b, c], prompt(text)), b);
});

test("prefix affinity: equal prefixes go to the less loaded holder", () => {
  const balancer = createBalancer("prefix_affinity", affinity);
  const a = server(1, 1);
  const b = server(1, 0);
  const other = server(1, 0);
  const text = "w".repeat(64);
  balancer.served(a, prompt(text));
  balancer.served(b, prompt(text));
  for (let pick = 0; pick < 4; pick++) assert.equal(balancer.choose([a, b, other], prompt(text)), b);
  b.begin();
  b.begin();
  for (let pick = 0; pick < 4; pick++) assert.equal(balancer.choose([a, b, other], prompt(text)), a);
});

test("prefix affinity: a forgotten server loses its prefixes", () => {
  const balancer = createBalancer("prefix_affinity", affinity);
  const holder = server(1, 1);
  const idle = server();
  const text = "r".repeat(64);
  balancer.served(holder, prompt(text));
  assert.equal(balancer.choose([holder, idle], prompt(text)), holder);
  balancer.forget(holder);
  assert.equal(balancer.choose([holder, idle], prompt(text)), idle);
});

test("prefix affinity: a prompt shorter than one block is placed by load", () => {
  const balancer = createBalancer("prefix_affinity", affinity);
  const holder = server(1, 1);
  const idle = server();
  balancer.served(holder, prompt("tiny"));
  assert.equal(balancer.choose([holder, idle], prompt("tiny")), idle);
});

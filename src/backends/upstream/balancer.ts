/**
 * Which upstream of a pool takes a request, among those in rotation that this request has
 * not tried yet. Three policies:
 * - `least_outstanding` (default): fewest requests in flight per unit of weight; ties go
 *   round the pool so that an idle pool still spreads its load.
 * - `weighted_round_robin`: smooth weighted round robin (nginx's), so weights 2:1 send
 *   A B A, A B A rather than A A B, A A B.
 * - `prefix_affinity`: the upstream that served the longest prefix of this prompt before,
 *   when that prefix covers at least `minMatch` of the prompt and that upstream is not
 *   overloaded against the idlest (more than `balanceAbs` more in flight and `balanceRel`
 *   times as many); otherwise least outstanding.
 */
import type { BalancingPolicy, PrefixAffinityConfig } from "../../config/model-file.js";
import { PrefixIndex } from "./prefix-index.js";
import type { UpstreamServer } from "./upstream-server.js";

/** What a policy may read of a request. */
export interface RoutedPrompt {
  /** Chained keys of the prompt's whole blocks (see prefix-index.ts). */
  readonly blocks: readonly string[];
  /** Characters of prompt text the blocks were cut from. */
  readonly chars: number;
}

export interface Balancer {
  choose(candidates: readonly UpstreamServer[], prompt: RoutedPrompt): UpstreamServer | undefined;
  /** `server` answered `prompt`: remember it (prefix affinity). */
  served(server: UpstreamServer, prompt: RoutedPrompt): void;
  forget(server: UpstreamServer): void;
}

class LeastOutstanding implements Balancer {
  #turn = 0;

  choose(candidates: readonly UpstreamServer[]): UpstreamServer | undefined {
    if (candidates.length === 0) return undefined;
    const start = this.#turn++ % candidates.length;
    let best: UpstreamServer | undefined;
    for (let offset = 0; offset < candidates.length; offset++) {
      const candidate = candidates[(start + offset) % candidates.length] as UpstreamServer;
      if (best === undefined || candidate.load() < best.load()) best = candidate;
    }
    return best;
  }

  served(): void {}
  forget(): void {}
}

class WeightedRoundRobin implements Balancer {
  readonly #current = new Map<UpstreamServer, number>();

  choose(candidates: readonly UpstreamServer[]): UpstreamServer | undefined {
    let total = 0;
    let best: UpstreamServer | undefined;
    for (const candidate of candidates) {
      const current = (this.#current.get(candidate) ?? 0) + candidate.weight;
      this.#current.set(candidate, current);
      total += candidate.weight;
      if (best === undefined || current > (this.#current.get(best) ?? 0)) best = candidate;
    }
    if (best !== undefined) this.#current.set(best, (this.#current.get(best) ?? 0) - total);
    return best;
  }

  served(): void {}
  forget(server: UpstreamServer): void {
    this.#current.delete(server);
  }
}

class PrefixAffinity implements Balancer {
  readonly #config: PrefixAffinityConfig;
  readonly #index: PrefixIndex<UpstreamServer>;
  readonly #fallback = new LeastOutstanding();

  constructor(config: PrefixAffinityConfig) {
    this.#config = config;
    this.#index = new PrefixIndex(config.maxBlocks);
  }

  choose(candidates: readonly UpstreamServer[], prompt: RoutedPrompt): UpstreamServer | undefined {
    const idlest = this.#fallback.choose(candidates);
    if (idlest === undefined || prompt.blocks.length === 0) return idlest;
    let best: UpstreamServer | undefined;
    let bestBlocks = 0;
    for (const [server, blocks] of this.#index.match(prompt.blocks, candidates)) {
      if (blocks > bestBlocks || (blocks === bestBlocks && best !== undefined && server.load() < best.load())) {
        best = server;
        bestBlocks = blocks;
      }
    }
    if (best === undefined) return idlest;
    const coverage = (bestBlocks * this.#config.blockChars) / Math.max(1, prompt.chars);
    const overloaded = best.inFlight - idlest.inFlight > this.#config.balanceAbs && best.inFlight > idlest.inFlight * this.#config.balanceRel;
    return coverage >= this.#config.minMatch && !overloaded ? best : idlest;
  }

  served(server: UpstreamServer, prompt: RoutedPrompt): void {
    this.#index.record(prompt.blocks, server);
  }

  forget(server: UpstreamServer): void {
    this.#index.forget(server);
  }
}

export function createBalancer(policy: BalancingPolicy, affinity: PrefixAffinityConfig): Balancer {
  if (policy === "weighted_round_robin") return new WeightedRoundRobin();
  if (policy === "prefix_affinity") return new PrefixAffinity(affinity);
  return new LeastOutstanding();
}

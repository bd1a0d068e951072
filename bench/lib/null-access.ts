/**
 * The "access control off" arm of the access-overhead benchmark: a store that keeps
 * nothing and has no keys (so requests run unauthenticated) and a limiter that admits
 * everything. Only for measuring; Parley itself always has a real store.
 */
import type { AccessStore } from "../../src/access/store.js";
import type { AdmitResult, RateLimiter } from "../../src/access/limiter.js";

export class NullStore implements AccessStore {
  async migrate(): Promise<void> {}
  async createKey(): Promise<void> {}
  async findKeyByHash(): Promise<undefined> {
    return undefined;
  }
  async getKey(): Promise<undefined> {
    return undefined;
  }
  async listKeys(): Promise<[]> {
    return [];
  }
  async revokeKey(): Promise<undefined> {
    return undefined;
  }
  async replaceKeySecret(): Promise<undefined> {
    return undefined;
  }
  async hasKeys(): Promise<boolean> {
    return false;
  }
  async appendLedger(): Promise<void> {}
  async usage(): Promise<[]> {
    return [];
  }
  async tokensUsed(): Promise<number> {
    return 0;
  }
  async recentRequests(): Promise<[]> {
    return [];
  }
  async close(): Promise<void> {}
}

export class NullLimiter implements RateLimiter {
  async admit(): Promise<AdmitResult> {
    return { admitted: true, lease: { settle: async () => undefined }, state: { requests: null, tokens: null } };
  }
  async close(): Promise<void> {}
}

/** Opens the configured store and limiter and wires them into an AccessControl. */
import type { AccessConfig } from "../config/access-config.js";
import { AccessControl } from "./access-control.js";
import { openLimiter } from "./open-limiter.js";
import { openStore } from "./open-store.js";

export async function openAccess(config: AccessConfig, staticKeys: readonly string[]): Promise<AccessControl> {
  const store = await openStore({ dataDir: config.dataDir, ...(config.databaseUrl !== undefined ? { databaseUrl: config.databaseUrl } : {}) });
  try {
    const limiter = await openLimiter({
      ...(config.redisUrl !== undefined ? { redisUrl: config.redisUrl } : {}),
      budgetSeed: (keyId, since) => store.tokensUsed(keyId, since),
    });
    return new AccessControl({ store, limiter, staticKeys });
  } catch (error) {
    await store.close();
    throw error;
  }
}

/** `parley usage`: the usage ledger, filtered and aggregated. */
import type { Command } from "commander";
import { openStore } from "../access/open-store.js";
import type { AccessStore } from "../access/store.js";
import { parseUsageQuery, usageView } from "../access/usage-query.js";
import { buildAccessConfig, type AccessFlags } from "../config/access-config.js";
import { fail, table } from "./output.js";

interface UsageFlags extends AccessFlags {
  key?: string;
  model?: string;
  since?: string;
  until?: string;
  by?: string;
  json?: boolean;
}

export function registerUsageCommand(program: Command): void {
  program
    .command("usage")
    .description("Show token usage from the ledger.")
    .option("--key <id>", "only this key (key_…)")
    .option("--model <name>", "only this model")
    .option("--since <time>", "from a date (2027-01-31), an instant, or a look-back (30m, 24h, 7d)")
    .option("--until <time>", "before this time")
    .option("--by <group>", "day, key, model or none", "none")
    .option("--data-dir <dir>", "SQLite data directory (default $PARLEY_HOME or ~/.local/share/parley)")
    .option("--database-url <url>", "PostgreSQL instead of SQLite (also DATABASE_URL)")
    .option("--json", "machine-readable output")
    .action(async (flags: UsageFlags) => {
      let store: AccessStore | undefined;
      try {
        const query = parseUsageQuery(flags);
        const config = buildAccessConfig(flags);
        store = await openStore({ dataDir: config.dataDir, ...(config.databaseUrl !== undefined ? { databaseUrl: config.databaseUrl } : {}) });
        const buckets = await store.usage(query);
        const text =
          buckets.length === 0
            ? "No usage recorded for this selection."
            : table(
                [query.groupBy === "none" ? "ALL" : query.groupBy.toUpperCase(), "REQUESTS", "PROMPT", "COMPLETION", "CACHED", "TOTAL"],
                buckets.map((bucket) => [
                  bucket.group,
                  String(bucket.requests),
                  String(bucket.promptTokens),
                  String(bucket.completionTokens),
                  String(bucket.cachedTokens),
                  String(bucket.totalTokens),
                ]),
              );
        process.stdout.write(`${flags.json === true ? JSON.stringify(buckets.map(usageView), null, 2) : text}\n`);
        await store.close();
      } catch (error) {
        await store?.close().catch(() => undefined);
        fail(error);
      }
    });
}

/** `parley keys create|list|show|revoke|rotate`: key management straight on the store. */
import type { Command } from "commander";
import type { AccessStore } from "../access/store.js";
import { KeyService } from "../access/key-service.js";
import { keyStatus, keyView, parseKeySpec } from "../access/key-spec.js";
import { openStore } from "../access/open-store.js";
import type { ApiKeyRecord } from "../access/types.js";
import { buildAccessConfig, type AccessFlags } from "../config/access-config.js";
import { fail, integerFlag, table } from "./output.js";

interface CommonFlags extends AccessFlags {
  json?: boolean;
}

interface CreateFlags extends CommonFlags {
  name: string;
  models?: string;
  rpm?: string;
  tpm?: string;
  maxConcurrent?: string;
  budgetTokens?: string;
  budgetPeriod?: string;
  expires?: string;
}

async function withKeys<T>(flags: CommonFlags, action: (keys: KeyService) => Promise<T>): Promise<void> {
  let store: AccessStore | undefined;
  try {
    const config = buildAccessConfig(flags);
    store = await openStore({ dataDir: config.dataDir, ...(config.databaseUrl !== undefined ? { databaseUrl: config.databaseUrl } : {}) });
    await action(new KeyService(store));
    await store.close();
  } catch (error) {
    await store?.close().catch(() => undefined);
    fail(error);
  }
}

function describe(record: ApiKeyRecord): string {
  const limits = [
    record.models !== null ? `models ${record.models.join(",")}` : "",
    record.rpm !== null ? `${record.rpm} rpm` : "",
    record.tpm !== null ? `${record.tpm} tpm` : "",
    record.maxConcurrent !== null ? `${record.maxConcurrent} concurrent` : "",
    record.budgetTokens !== null ? `${record.budgetTokens} tokens/${record.budgetPeriod ?? ""}` : "",
    record.expiresAt !== null ? `expires ${record.expiresAt.toISOString()}` : "",
  ].filter((part) => part !== "");
  return limits.length === 0 ? "no limits" : limits.join(", ");
}

function print(flags: CommonFlags, json: unknown, text: string): void {
  process.stdout.write(`${flags.json === true ? JSON.stringify(json, null, 2) : text}\n`);
}

function issued(flags: CommonFlags, record: ApiKeyRecord, secret: string, verb: string): void {
  print(
    flags,
    { key: keyView(record), secret },
    `${verb} key ${record.id} (${record.name}): ${describe(record)}\n\n  ${secret}\n\nThis secret is shown once and cannot be recovered: store it now.`,
  );
}

const withStoreOptions = (command: Command): Command =>
  command
    .option("--data-dir <dir>", "SQLite data directory (default $PARLEY_HOME or ~/.local/share/parley)")
    .option("--database-url <url>", "PostgreSQL instead of SQLite (also DATABASE_URL)")
    .option("--json", "machine-readable output");

export function registerKeysCommand(program: Command): void {
  const keys = program.command("keys").description("Manage API keys: their limits, budgets and expiry.");

  withStoreOptions(keys.command("create").description("Create a key; its secret is shown once."))
    .requiredOption("--name <name>", "who or what the key is for")
    .option("--models <a,b>", "models the key may use (default: all)")
    .option("--rpm <n>", "requests per minute")
    .option("--tpm <n>", "tokens (prompt + completion) per minute")
    .option("--max-concurrent <n>", "requests in flight at once")
    .option("--budget-tokens <n>", "tokens per budget period")
    .option("--budget-period <period>", "day, month or total")
    .option("--expires <date>", "expiry, e.g. 2027-01-31 or 2027-01-31T12:00:00Z")
    .action((flags: CreateFlags) =>
      withKeys(flags, async (service) => {
        const spec = parseKeySpec({
          name: flags.name,
          models: flags.models?.split(",").map((model) => model.trim()),
          rpm: integerFlag("--rpm", flags.rpm),
          tpm: integerFlag("--tpm", flags.tpm),
          max_concurrent: integerFlag("--max-concurrent", flags.maxConcurrent),
          budget_tokens: integerFlag("--budget-tokens", flags.budgetTokens),
          budget_period: flags.budgetPeriod,
          expires_at: flags.expires,
        });
        const created = await service.create(spec);
        issued(flags, created.record, created.secret, "Created");
      }),
    );

  withStoreOptions(keys.command("list").description("List keys (never their secrets)."))
    .action((flags: CommonFlags) =>
      withKeys(flags, async (service) => {
        const records = await service.list();
        print(
          flags,
          records.map((record) => keyView(record)),
          records.length === 0
            ? "No keys yet: create one with 'parley keys create --name NAME'."
            : table(
                ["ID", "NAME", "PREFIX", "STATUS", "LIMITS", "CREATED"],
                records.map((record) => [record.id, record.name, `${record.prefix}…`, keyStatus(record), describe(record), record.createdAt.toISOString()]),
              ),
        );
      }),
    );

  withStoreOptions(keys.command("show").argument("<id>", "key id (key_…)").description("Show one key."))
    .action((id: string, flags: CommonFlags) =>
      withKeys(flags, async (service) => {
        const record = await service.show(id);
        const view = keyView(record);
        print(flags, view, Object.entries(view).map(([field, value]) => `${field.padEnd(15)}${value === null ? "-" : String(value)}`).join("\n"));
      }),
    );

  withStoreOptions(keys.command("revoke").argument("<id>", "key id (key_…)").description("Revoke a key at once."))
    .action((id: string, flags: CommonFlags) =>
      withKeys(flags, async (service) => {
        const record = await service.revoke(id);
        print(flags, keyView(record), `Revoked key ${record.id} (${record.name}).`);
      }),
    );

  withStoreOptions(keys.command("rotate").argument("<id>", "key id (key_…)").description("Replace a key's secret; the old one stops working."))
    .action((id: string, flags: CommonFlags) =>
      withKeys(flags, async (service) => {
        const rotated = await service.rotate(id);
        issued(flags, rotated.record, rotated.secret, "Rotated");
      }),
    );
}

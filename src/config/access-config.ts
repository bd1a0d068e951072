/**
 * Where keys, the usage ledger and rate-limit counters live, shared by `parley serve`,
 * `parley keys` and `parley usage`: a SQLite file in the data directory unless
 * `DATABASE_URL` names a PostgreSQL server; counters in memory unless `REDIS_URL` is set.
 */
import os from "node:os";
import path from "node:path";

export interface AccessConfig {
  readonly dataDir: string;
  readonly databaseUrl: string | undefined;
  readonly redisUrl: string | undefined;
}

export interface AccessFlags {
  dataDir?: string;
  databaseUrl?: string;
  redisUrl?: string;
}

const nonEmpty = (value: string | undefined): string | undefined => (value === undefined || value.trim() === "" ? undefined : value.trim());

/** `$PARLEY_HOME`, else `$XDG_DATA_HOME/parley`, else `~/.local/share/parley`. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const home = nonEmpty(env.PARLEY_HOME);
  if (home !== undefined) return home;
  return path.join(nonEmpty(env.XDG_DATA_HOME) ?? path.join(os.homedir(), ".local", "share"), "parley");
}

export function buildAccessConfig(flags: AccessFlags, env: NodeJS.ProcessEnv = process.env): AccessConfig {
  return {
    dataDir: nonEmpty(flags.dataDir) ?? defaultDataDir(env),
    databaseUrl: nonEmpty(flags.databaseUrl) ?? nonEmpty(env.DATABASE_URL),
    redisUrl: nonEmpty(flags.redisUrl) ?? nonEmpty(env.REDIS_URL),
  };
}

/**
 * Opens the access store that the deployment asks for, migrated and ready: PostgreSQL
 * when a database URL is given, else the SQLite file `<dataDir>/parley.db`.
 */
import { mkdir } from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { PostgresStore } from "./postgres-store.js";
import { SqliteStore } from "./sqlite-store.js";
import type { AccessStore } from "./store.js";

export interface OpenStoreOptions {
  /**
   * A `postgres://` or `postgresql://` URL (libpq-style query parameters such as
   * `sslmode` and `options=-c search_path=...` are honoured). Absent or empty: SQLite.
   */
  readonly databaseUrl?: string | undefined;
  /** Where the SQLite file lives; created, with its parents, when missing. */
  readonly dataDir: string;
  /**
   * How long to wait for a PostgreSQL connection, in ms; `pg` also applies it to a query
   * waiting for a free pooled connection. Defaults to `10000`.
   */
  readonly connectTimeoutMs?: number | undefined;
}

export const SQLITE_FILE_NAME = "parley.db";

/** Throws an `Error` that says what failed; a message never contains the URL's password. */
export async function openStore(options: OpenStoreOptions): Promise<AccessStore> {
  const databaseUrl = options.databaseUrl ?? "";
  return databaseUrl === ""
    ? openSqlite(options.dataDir)
    : openPostgres(databaseUrl, options.connectTimeoutMs ?? 10_000);
}

async function openSqlite(dataDir: string): Promise<AccessStore> {
  try {
    await mkdir(dataDir, { recursive: true });
  } catch (error) {
    throw new Error(`could not create the data directory ${dataDir}: ${describe(error)}`, { cause: error });
  }
  const file = path.join(dataDir, SQLITE_FILE_NAME);
  let store: SqliteStore | undefined;
  try {
    store = new SqliteStore(file);
    await store.migrate();
    return store;
  } catch (error) {
    await store?.close();
    throw new Error(`could not open the SQLite database ${file}: ${describe(error)}`, { cause: error });
  }
}

async function openPostgres(databaseUrl: string, connectTimeoutMs: number): Promise<AccessStore> {
  const target = describePostgresUrl(databaseUrl);
  const redact = (text: string): string =>
    target.secrets.reduce((redacted, secret) => redacted.split(secret).join("***"), text);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(databaseUrl)?.[1]?.toLowerCase();
  if (scheme !== "postgres" && scheme !== "postgresql") {
    throw new Error(
      `the database URL ${target.location} is not supported: expected postgres:// or postgresql://`,
    );
  }
  // The pool parses the URL when it first connects, so a malformed URL fails in migrate().
  const pool = new pg.Pool({ connectionString: databaseUrl, connectionTimeoutMillis: connectTimeoutMs });
  const store = new PostgresStore(pool);
  try {
    await store.migrate();
    return store;
  } catch (error) {
    // No `cause`: the original error may carry the connection string.
    await store.close().catch(() => {});
    if ((error as { code?: unknown }).code === "ERR_INVALID_URL") {
      throw new Error(`the database URL ${target.location} is not a valid URL`);
    }
    throw new Error(`could not open the PostgreSQL database ${target.location}: ${redact(describe(error))}`);
  }
}

/**
 * A printable location for a database URL (scheme, user, host, port, database; no
 * password, no query) and the strings that must never be shown: the password as
 * written and decoded, from the user-info part or a `password` query parameter.
 */
function describePostgresUrl(databaseUrl: string): { location: string; secrets: string[] } {
  const secrets = new Set<string>();
  const add = (secret: string): void => {
    if (secret === "") return;
    secrets.add(secret);
    try {
      secrets.add(decodeURIComponent(secret));
    } catch {
      // Malformed percent-encoding: the raw form is already listed.
    }
  };
  // Taken by pattern as well as by parsing, so that a URL the parser rejects is covered too.
  add(/^[^:/?#]*:\/\/[^:@/?#]*:([^/?#]*)@/.exec(databaseUrl)?.[1] ?? "");
  for (const match of databaseUrl.matchAll(/[?&]password=([^&#]*)/gi)) add(match[1] ?? "");
  // libpq forms that WHATWG URLs reject (an empty host) fall back to the pattern.
  let location = databaseUrl.replace(/^([^:/?#]*:\/\/[^:@/?#]*)(:[^@/?#]*)?@/, "$1@").replace(/[?#].*$/s, "");
  try {
    const url = new URL(databaseUrl);
    add(url.password);
    const user = url.username === "" ? "" : `${url.username}@`;
    location = `${url.protocol}//${user}${url.host}${url.pathname}`;
  } catch {
    // Keep the pattern's version.
  }
  // Longest first, so that a password containing another secret is replaced whole.
  const ordered = [...secrets].sort((a, b) => b.length - a.length);
  return { location: ordered.reduce((text, secret) => text.split(secret).join("***"), location), secrets: ordered };
}

function describe(error: unknown): string {
  if (error instanceof AggregateError && error.message === "") {
    return error.errors.map(describe).join("; ");
  }
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    if (error.message !== "") return error.message;
    return typeof code === "string" ? code : error.name;
  }
  return String(error);
}

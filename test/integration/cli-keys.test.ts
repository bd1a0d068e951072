/**
 * `parley keys create|list|show|revoke|rotate` and `parley usage` as a user runs them
 * (the built CLI, a child process per command), on a SQLite data directory and, when
 * TEST_DATABASE_URL is set, on a PostgreSQL schema of its own: the secret is printed once,
 * bad input is one `parley: ...` line and exit 1 with the store unchanged, and a key
 * created here works against `parley serve` on the same store, whose usage `parley usage`
 * then shows.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { assertBuilt, createKeyWithCli, isolatedEnv, parley, startServe, storeArgs, type StoreFlags } from "../helpers/access-cli.js";
import { eventually, freshPostgres } from "../helpers/access-parley.js";

interface Variant {
  readonly name: string;
  open(): Promise<{ flags: StoreFlags; dispose(): Promise<void> } | { skip: string }>;
}

const VARIANTS: Variant[] = [
  {
    name: "SQLite (--data-dir)",
    open: async () => {
      const dataDir = await mkdtemp(path.join(os.tmpdir(), "parley-cli-keys-"));
      return { flags: { dataDir }, dispose: () => rm(dataDir, { recursive: true, force: true }) };
    },
  },
  {
    name: "PostgreSQL (--database-url)",
    open: async () => {
      const database = await freshPostgres();
      if ("skip" in database) return database;
      const dataDir = await mkdtemp(path.join(os.tmpdir(), "parley-cli-keys-"));
      return {
        flags: { dataDir, databaseUrl: database.url },
        dispose: async () => {
          await database.dispose();
          await rm(dataDir, { recursive: true, force: true });
        },
      };
    },
  },
];

const STACK = /^\s+at /m;

function cliSuite(variant: Variant, skip: string | undefined): void {
  if (skip !== undefined) {
    test(`parley keys and parley usage: ${variant.name}`, { skip }, () => {});
    return;
  }
  describe(`parley keys and parley usage: ${variant.name}`, () => {
    let flags: StoreFlags;
    let dispose: () => Promise<void> = async () => {};
    let home = "";
    let env: NodeJS.ProcessEnv = {};
    const run = (...args: string[]) => parley([...args, ...storeArgs(flags)], env);
    const listJson = async (): Promise<Array<Record<string, unknown>>> => {
      const result = await run("keys", "list", "--json");
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as Array<Record<string, unknown>>;
    };

    before(async () => {
      assertBuilt();
      const opened = await variant.open();
      assert.ok(!("skip" in opened));
      flags = opened.flags;
      dispose = opened.dispose;
      home = await mkdtemp(path.join(os.tmpdir(), "parley-cli-home-"));
      env = isolatedEnv(home);
    });
    after(async () => {
      await dispose();
      await rm(home, { recursive: true, force: true });
    });

    test("create prints the secret once; list and show never do; --json outputs; rotate keeps the id; revoke shows revoked", async () => {
      const empty = await run("keys", "list");
      assert.equal(empty.code, 0, empty.stderr);
      assert.match(empty.stdout, /No keys yet/);
      assert.deepEqual(await listJson(), []);

      const text = await run("keys", "create", "--name", "alice", "--models", "test-model,other", "--rpm", "60", "--tpm", "20000", "--max-concurrent", "4", "--budget-tokens", "1000000", "--budget-period", "month", "--expires", "2099-06-30");
      assert.equal(text.code, 0, text.stderr);
      assert.equal(text.stderr, "");
      const secret = /(sk-pl-[A-Za-z0-9_-]{40,})/.exec(text.stdout)?.[1];
      assert.ok(secret !== undefined, `the secret is printed: ${text.stdout}`);
      assert.match(text.stdout, /shown once/);
      assert.match(text.stdout, /Created key (key_[0-9a-f]{16}) \(alice\): models test-model,other, 60 rpm, 20000 tpm, 4 concurrent, 1000000 tokens\/month, expires 2099-06-30T00:00:00.000Z/);
      const id = /Created key (key_[0-9a-f]{16})/.exec(text.stdout)?.[1] ?? "";

      const json = await createKeyWithCli(flags, env, ["--rpm", "5"], "bob");
      assert.match(json.secret, /^sk-pl-/);
      assert.deepEqual({ ...json.key, id: "", created_at: "" }, {
        id: "", name: "bob", prefix: json.secret.slice(0, 10), status: "active", models: null, rpm: 5, tpm: null, max_concurrent: null,
        budget_tokens: null, budget_period: null, expires_at: null, created_at: "", revoked_at: null,
      });

      const outputs: string[] = [];
      for (const args of [["keys", "list"], ["keys", "list", "--json"], ["keys", "show", id], ["keys", "show", id, "--json"], ["keys", "show", json.id, "--json"]]) {
        const result = await run(...args);
        assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
        outputs.push(result.stdout);
      }
      for (const output of outputs) {
        for (const shown of [secret, json.secret]) {
          assert.ok(!output.includes(shown), "a secret is printed again");
          assert.ok(!output.includes(shown.slice(10)), "part of a secret is printed again");
        }
      }
      assert.match(outputs[0] ?? "", new RegExp(`${id}\\s+alice\\s+${secret.slice(0, 10)}…\\s+active`));
      const list = JSON.parse(outputs[1] ?? "") as Array<Record<string, unknown>>;
      assert.deepEqual(list.map((key) => key.id), [id, json.id]);
      assert.deepEqual(list[1], json.key);
      assert.deepEqual(JSON.parse(outputs[4] ?? ""), json.key);
      assert.match(outputs[2] ?? "", /^id\s+key_/m);
      assert.match(outputs[2] ?? "", /^status\s+active$/m);

      const rotated = await run("keys", "rotate", json.id, "--json");
      assert.equal(rotated.code, 0, rotated.stderr);
      const { key: rotatedKey, secret: newSecret } = JSON.parse(rotated.stdout) as { key: Record<string, unknown>; secret: string };
      assert.equal(rotatedKey.id, json.id);
      assert.notEqual(newSecret, json.secret);
      assert.equal(rotatedKey.prefix, newSecret.slice(0, 10));
      const rotatedText = await run("keys", "rotate", json.id);
      assert.equal(rotatedText.code, 0);
      assert.match(rotatedText.stdout, /Rotated key key_[0-9a-f]{16} \(bob\)[\s\S]*sk-pl-[A-Za-z0-9_-]{40,}[\s\S]*shown once/);

      const revoked = await run("keys", "revoke", id);
      assert.equal(revoked.code, 0, revoked.stderr);
      assert.equal(revoked.stdout.trim(), `Revoked key ${id} (alice).`);
      const shown = await run("keys", "show", id, "--json");
      const view = JSON.parse(shown.stdout) as Record<string, unknown>;
      assert.equal(view.status, "revoked");
      assert.ok(typeof view.revoked_at === "string");
      const again = await run("keys", "revoke", id, "--json");
      assert.equal(again.code, 0, "revoking again is idempotent");
      assert.equal((JSON.parse(again.stdout) as Record<string, unknown>).revoked_at, view.revoked_at);
      const listed = await run("keys", "list");
      assert.match(listed.stdout, new RegExp(`${id}\\s+alice\\s+\\S+\\s+revoked`));
    });

    test("bad input: exit 1, one 'parley: ...' line naming the flag or id, no stack trace, and the store unchanged", async () => {
      const existing = await createKeyWithCli(flags, env, [], "existing");
      const create = (...args: string[]) => ["keys", "create", "--name", "x", ...args];
      const cases: Array<[string[], RegExp]> = [
        [["keys", "show", "key_0000000000000000"], /No key with id 'key_0000000000000000'/],
        [["keys", "show", "nope"], /No key with id 'nope'/],
        [["keys", "revoke", "key_0000000000000000"], /No key with id 'key_0000000000000000'/],
        [["keys", "revoke", "' OR '1'='1"], /No key with id '' OR '1'='1'/],
        [["keys", "rotate", "key_ffffffffffffffff"], /No key with id 'key_ffffffffffffffff'/],
        [["keys", "rotate", "key_0000000000000000'; DROP TABLE keys; --"], /No key with id/],
        [["keys", "show", "k".repeat(500)], /No key with id 'k{10,80}'\.$/],
        [create("--rpm", "-5"), /--rpm.*-5/],
        [create("--rpm", "abc"), /--rpm must be an integer/],
        [create("--rpm", "1.5"), /--rpm/],
        [create("--rpm", "0"), /--rpm/],
        [create("--rpm", "99999999999999999999"), /--rpm/],
        [create("--tpm", "-1"), /--tpm/],
        [create("--max-concurrent", "0"), /--max-concurrent/],
        [create("--budget-tokens", "-3", "--budget-period", "day"), /--budget-tokens/],
        [create("--budget-tokens", "5"), /--budget-period/],
        [create("--budget-period", "day"), /--budget-tokens/],
        [create("--budget-tokens", "5", "--budget-period", "week"), /--budget-period/],
        [create("--expires", "tomorrow"), /--expires/],
        [create("--expires", "2020-01-01"), /--expires.*future/],
        [create("--expires", "2099-13-01"), /--expires/],
        [create("--models", ""), /--models/],
        [create("--models", "a,,b"), /--models/],
        [["keys", "create", "--name", ""], /--name/],
        [["keys", "create", "--name", "   "], /--name/],
        [["keys", "create", "--name", "n".repeat(10_000)], /--name.*200/],
        [["keys", "create", "--name", "tab\there"], /--name.*control/],
        [["usage", "--by", "week"], /--by/],
        [["usage", "--since", "yesterday"], /--since/],
        [["usage", "--until", "soon"], /--until/],
        [["usage", "--since", "2024-03-10", "--until", "2024-03-01"], /--until/],
      ];
      const before = await listJson();
      for (const [args, message] of cases) {
        const what = args.join(" ").slice(0, 80);
        const result = await run(...args);
        assert.equal(result.code, 1, `${what}: exit code (stdout ${result.stdout.slice(0, 200)})`);
        assert.equal(result.stdout, "", `${what}: nothing on stdout`);
        const lines = result.stderr.split("\n").filter((line) => line !== "");
        assert.equal(lines.length, 1, `${what}: one line, got ${JSON.stringify(result.stderr.slice(0, 400))}`);
        assert.match(lines[0] ?? "", /^parley: /, what);
        assert.match(lines[0] ?? "", message, what);
        assert.doesNotMatch(result.stderr, STACK, `${what}: no stack trace`);
        assert.ok((lines[0] ?? "").length < 300, `${what}: the line does not echo the whole input`);
      }
      assert.deepEqual(await listJson(), before, "no bad command changed the store");
      const shown = await run("keys", "show", existing.id, "--json");
      assert.equal((JSON.parse(shown.stdout) as Record<string, unknown>).status, "active");
    });

    test("bad input: an impossible calendar date (--expires 2099-02-30) is refused, not rolled over into March", async () => {
      const before = await listJson();
      const result = await run("keys", "create", "--name", "x", "--expires", "2099-02-30");
      assert.equal(result.code, 1, `exit 1 expected; got ${result.code}: ${result.stdout}`);
      assert.match(result.stderr, /^parley: .*--expires/);
      assert.deepEqual(await listJson(), before);
    });

    test("bad input: a key id that happens to be the word 'id' is named as given", async () => {
      const result = await run("keys", "show", "id");
      assert.equal(result.code, 1);
      assert.equal(result.stderr.trim(), "parley: No key with id 'id'.");
    });

    test("names with quotes and SQL are stored verbatim and break nothing", async () => {
      const before = await listJson();
      const names = [`Robert'); DROP TABLE keys;--`, `"double" 'single' \`back\` $HOME \\`, `x' OR '1'='1`, "名前 🔑"];
      for (const name of names) {
        const created = await createKeyWithCli(flags, env, [], name);
        assert.equal(created.key.name, name);
        const shown = await run("keys", "show", created.id, "--json");
        assert.equal((JSON.parse(shown.stdout) as Record<string, unknown>).name, name);
      }
      const afterwards = await listJson();
      assert.deepEqual(afterwards.slice(0, before.length), before, "every earlier key is intact");
      assert.deepEqual(afterwards.slice(before.length).map((key) => key.name), names);
    });

    test("a key created by the CLI works against parley serve on the same store; revoke takes effect; parley usage --by key shows its requests", async () => {
      const key = await createKeyWithCli(flags, env, ["--rpm", "1000"], "served");
      const serve = await startServe(storeArgs(flags), env);
      try {
        const headers = (secret?: string) => ({ "content-type": "application/json", ...(secret !== undefined ? { authorization: `Bearer ${secret}` } : {}) });
        const body = (max: number) => JSON.stringify({ model: "stories260K", messages: [{ role: "user", content: "Hi" }], max_tokens: max });
        const models = (await (await fetch(`${serve.url}/v1/models`, { headers: headers(key.secret) })).json()) as { data: Array<{ id: string }> };
        const model = models.data[0]?.id ?? "";
        const request = (secret: string | undefined, max: number) =>
          fetch(`${serve.url}/v1/chat/completions`, { method: "POST", headers: headers(secret), body: body(max).replace("stories260K", model) });

        assert.equal((await request(undefined, 2)).status, 401, "a key exists: a request without one is refused");
        let prompt = 0;
        let completion = 0;
        for (const max of [2, 3, 4]) {
          const response = await request(key.secret, max);
          const parsed = (await response.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
          assert.equal(response.status, 200);
          assert.ok(response.headers.get("x-ratelimit-limit-requests") === "1000");
          prompt += parsed.usage.prompt_tokens;
          completion += parsed.usage.completion_tokens;
        }

        // A key created while the server runs works at once, and revoking it takes effect at once.
        const late = await createKeyWithCli(flags, env, [], "late");
        assert.equal((await request(late.secret, 1)).status, 200);
        assert.equal((await parley(["keys", "revoke", late.id, ...storeArgs(flags)], env)).code, 0);
        const refused = await request(late.secret, 1);
        assert.equal(refused.status, 401);
        assert.match(((await refused.json()) as { error: { message: string } }).error.message, /revoked/);

        const usage = await run("usage", "--by", "key", "--json");
        assert.equal(usage.code, 0, usage.stderr);
        const buckets = JSON.parse(usage.stdout) as Array<{ group: string; requests: number; prompt_tokens: number; completion_tokens: number; total_tokens: number }>;
        const mine = buckets.find((bucket) => bucket.group === key.id);
        assert.deepEqual(mine && { requests: mine.requests, prompt: mine.prompt_tokens, completion: mine.completion_tokens, total: mine.total_tokens }, {
          requests: 3, prompt, completion, total: prompt + completion,
        });
        const lateBucket = buckets.find((bucket) => bucket.group === late.id);
        assert.equal(lateBucket?.requests, 1, "the revoked key's 401 left no row, its one request did");
        const table = await run("usage", "--by", "key", "--key", key.id);
        assert.equal(table.code, 0);
        assert.match(table.stdout, /^KEY\s+REQUESTS\s+PROMPT\s+COMPLETION\s+CACHED\s+TOTAL$/m);
        assert.match(table.stdout, new RegExp(`^${key.id}\\s+3\\s+${prompt}\\s+${completion}\\s+\\d+\\s+${prompt + completion}$`, "m"));
        const none = await run("usage", "--key", key.id, "--since", "2099-01-01");
        assert.match(none.stdout, /No usage recorded/);

        const output = serve.process.output();
        assert.match(output, /"msg":"chat completion"/);
        for (const secret of [key.secret, late.secret]) assert.ok(!output.includes(secret), "a secret is in serve's log");
        assert.doesNotMatch(output, /sk-pl-[A-Za-z0-9_-]{5,}/, "something like a secret is in serve's log");
      } finally {
        assert.equal(await serve.process.stop(), 0, "serve exits 0 on SIGTERM");
      }
      await eventually("serve to be gone", () => (serve.process.child.exitCode !== null || serve.process.child.signalCode !== null ? true : undefined));
    });
  });
}

for (const variant of VARIANTS) {
  const skip = variant.name.startsWith("PostgreSQL") && (process.env.TEST_DATABASE_URL ?? "") === ""
    ? "TEST_DATABASE_URL is not set: run under scripts/with-services.sh to start a throw-away PostgreSQL"
    : undefined;
  cliSuite(variant, skip);
}

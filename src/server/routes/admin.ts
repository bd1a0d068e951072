/**
 * The admin API, behind the admin token (checked in the app's onRequest hook):
 * keys (create, list, show, revoke, rotate), usage aggregates from the ledger, and the
 * state of every upstream server behind the models served by pools.
 */
import type { FastifyInstance } from "fastify";
import type { AccessControl } from "../../access/access-control.js";
import { KeyService } from "../../access/key-service.js";
import { keyView, parseKeySpec } from "../../access/key-spec.js";
import { parseUsageQuery, usageView } from "../../access/usage-query.js";
import type { ModelRegistry } from "../../backends/registry.js";
import { upstreamPools } from "../../backends/upstream/upstream-backend.js";
import { ApiError } from "../../protocol/errors.js";

type IdParams = { Params: { id: string } };

function stringParam(query: Record<string, unknown>, name: string): string | undefined {
  const value = query[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw new ApiError("invalid_value", `Invalid '${name}': give it once, as a string.`, { param: name });
  return value;
}

export function registerAdminRoutes(app: FastifyInstance, access: AccessControl, registry: ModelRegistry): void {
  const keys = new KeyService(access.store);

  app.post("/admin/v1/keys", async (request, reply) => {
    const issued = await keys.create(parseKeySpec(request.body));
    access.keysChanged();
    return reply.code(201).send({ key: keyView(issued.record), secret: issued.secret });
  });
  app.get("/admin/v1/keys", async () => ({ object: "list", data: (await keys.list()).map((record) => keyView(record)) }));
  app.get<IdParams>("/admin/v1/keys/:id", async (request) => keyView(await keys.show(request.params.id)));
  const revoke = async (id: string) => keyView(await keys.revoke(id));
  app.delete<IdParams>("/admin/v1/keys/:id", async (request) => revoke(request.params.id));
  app.post<IdParams>("/admin/v1/keys/:id/revoke", async (request) => revoke(request.params.id));
  app.post<IdParams>("/admin/v1/keys/:id/rotate", async (request) => {
    const issued = await keys.rotate(request.params.id);
    return { key: keyView(issued.record), secret: issued.secret };
  });

  app.get("/admin/v1/usage", async (request) => {
    const query = request.query as Record<string, unknown>;
    const usage = parseUsageQuery({
      key: stringParam(query, "key"),
      model: stringParam(query, "model"),
      since: stringParam(query, "since"),
      until: stringParam(query, "until"),
      by: stringParam(query, "by"),
    });
    const buckets = await access.store.usage(usage);
    return {
      object: "list",
      group_by: usage.groupBy,
      data: buckets.map(usageView),
    };
  });

  // Each upstream pool: per server its breaker state, requests in flight, recent latency
  // and last error (addresses are shown here, to the operator; never to API clients).
  app.get("/admin/v1/upstreams", async () => ({
    object: "list",
    data: upstreamPools(registry).map((pool) => pool.view()),
  }));
}

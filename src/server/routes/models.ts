/** `GET /v1/models` and the seed-style `GET /model/api/v1/models`: every served name. */
import type { FastifyInstance } from "fastify";
import type { ModelRegistry } from "../../backends/registry.js";

export function registerModelRoutes(app: FastifyInstance, registry: ModelRegistry): void {
  const list = async () => ({
    object: "list" as const,
    data: registry.names().map(([name, backend]) => ({
      id: name,
      object: "model" as const,
      created: backend.info.created,
      owned_by: backend.info.ownedBy,
    })),
  });
  app.get("/v1/models", list);
  app.get("/model/api/v1/models", list);
}

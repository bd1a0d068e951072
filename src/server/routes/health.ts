/**
 * `GET /health`, without auth: 200 when every model is loaded, 503 while one is still
 * loading (or failed), so a load balancer or `curl --retry` can wait for readiness.
 */
import type { FastifyInstance } from "fastify";
import type { ModelRegistry } from "../../backends/registry.js";

export function registerHealthRoutes(app: FastifyInstance, registry: ModelRegistry): void {
  app.get("/health", async (_request, reply) => {
    const models = Object.fromEntries(registry.backends().map((backend) => [backend.info.id, backend.state()]));
    const states = Object.values(models);
    const status = states.every((state) => state === "ready") ? "ok" : states.includes("loading") ? "loading" : "unavailable";
    if (status !== "ok") void reply.code(503).header("retry-after", "5");
    return { status, models };
  });
}

/**
 * Without auth: `GET /health` is 200 when every model is loaded, 503 while one is still
 * loading (or failed), so `curl --retry` can wait for a server to come up; `GET /ready`
 * is the same and also 503 once the server drains for shutdown, so a load balancer stops
 * sending it traffic.
 */
import type { FastifyInstance } from "fastify";
import type { ModelRegistry } from "../../backends/registry.js";
import type { InFlight } from "../in-flight.js";

export function registerHealthRoutes(app: FastifyInstance, registry: ModelRegistry, inFlight: InFlight): void {
  app.get("/ready", async (_request, reply) => {
    const states = registry.backends().map((backend) => backend.state());
    const status = inFlight.draining ? "draining" : states.every((state) => state === "ready") ? "ready" : "not_ready";
    if (status !== "ready") void reply.code(503).header("retry-after", "5");
    return { status, in_flight: inFlight.size };
  });
  app.get("/health", async (_request, reply) => {
    const models = Object.fromEntries(registry.backends().map((backend) => [backend.info.id, backend.state()]));
    const states = Object.values(models);
    const status = states.every((state) => state === "ready") ? "ok" : states.includes("loading") ? "loading" : "unavailable";
    if (status !== "ok") void reply.code(503).header("retry-after", "5");
    return { status, models };
  });
}

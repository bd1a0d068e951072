/** `GET /metrics`, without auth like llama-server's and vLLM's: Prometheus text format. */
import type { FastifyInstance } from "fastify";
import type { Metrics } from "../../telemetry/metrics.js";

export function registerMetricsRoute(app: FastifyInstance, metrics: Metrics): void {
  app.get("/metrics", async (_request, reply) => {
    const body = await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(body);
  });
}

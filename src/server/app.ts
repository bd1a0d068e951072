/**
 * The Fastify application: hooks for stages 1–2 of DESIGN §2 (request id, auth), the
 * routes, and the error envelope. Listening and shutdown belong to the caller.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions } from "fastify";
import secureJson from "secure-json-parse";
import type { AccessControl, Principal } from "../access/access-control.js";
import type { ModelRegistry } from "../backends/registry.js";
import { engineGauge } from "../backends/local/llama-tuning.js";
import { upstreamGauges } from "../backends/upstream/upstream-backend.js";
import { ApiError } from "../protocol/errors.js";
import { acceptRequestId } from "../protocol/ids.js";
import type { ParameterRanges } from "../protocol/parameters.js";
import { AdminAuthenticator } from "./admin-auth.js";
import { registerErrorHandling } from "./error-handler.js";
import { Metrics } from "../telemetry/metrics.js";
import { InFlight } from "./in-flight.js";
import { LiveLoad } from "./live-load.js";
import { registerMetricsRoute } from "./routes/metrics.js";
import { registerAdminRoutes } from "./routes/admin.js";
import { registerChatCompletionRoutes } from "./routes/chat-completions.js";
import { registerDashboardRoutes } from "./routes/dashboard.js";
import { registerHealthRoutes } from "./routes/health.js";
import { registerModelRoutes } from "./routes/models.js";
import { registerWebRoutes, WEB_PUBLIC_ROUTES } from "./routes/web.js";

declare module "fastify" {
  interface FastifyRequest {
    /** Set when a route wrote its own log line for the request (stage 9). */
    accounted: boolean;
    /** Who the request runs as, once authenticated (stage 2). */
    principal: Principal | null;
  }
}

export interface ServerOptions {
  readonly registry: ModelRegistry;
  readonly access: AccessControl;
  readonly ranges: ParameterRanges;
  /** The admin API's bearer token; without one the admin API answers 403. */
  readonly adminToken?: string | undefined;
  /** Requests in flight, drained on shutdown by the caller. Defaults to a fresh one. */
  readonly inFlight?: InFlight;
  /** Largest accepted request body in bytes. Defaults to 1 MiB. */
  readonly bodyLimit?: number;
  /** A pino logger config, or false for none. Defaults to info-level JSON lines. */
  readonly logger?: FastifyServerOptions["logger"];
  /** A pino logger to use instead of `logger`. */
  readonly loggerInstance?: FastifyBaseLogger;
}

export const DEFAULT_BODY_LIMIT = 1024 * 1024;

/**
 * Routes that need no key: health checks, and the web pages and their assets (their
 * scripts send the key or admin token the user types). Admin routes take the admin token.
 */
const PUBLIC_ROUTES = new Set(["/health", "/ready", "/metrics", ...WEB_PUBLIC_ROUTES]);
const ADMIN_PREFIX = "/admin/";

/**
 * Auth is decided by the route the router matched, never by the raw URL: the router
 * decodes the path (`/%61dmin/…` matches `/admin/…`), so a raw-URL check could be
 * walked around. Unmatched URLs take an API key and then get their 404.
 */
function routeKind(route: string | undefined): "public" | "admin" | "api" {
  if (route !== undefined && PUBLIC_ROUTES.has(route)) return "public";
  if (route?.startsWith(ADMIN_PREFIX) === true) return "admin";
  return "api";
}

export function buildServer(options: ServerOptions): FastifyInstance {
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const app = Fastify({
    ...(options.loggerInstance !== undefined
      ? { loggerInstance: options.loggerInstance }
      : { logger: options.logger ?? { level: "info", redact: ["req.headers.authorization"] } }),
    bodyLimit,
    // One log line per request, written by Parley itself (stage 9), not Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: (request) => acceptRequestId(request.headers["x-request-id"]),
    return503OnClosing: true,
    forceCloseConnections: true,
  });
  // JSON only (anything else is 415), parsed with an error that says what is wrong with
  // it; prototype-poisoning keys are refused, not silently stripped.
  app.removeContentTypeParser(["text/plain", "application/json"]);
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
    try {
      done(null, secureJson.parse(body as string, undefined, { protoAction: "error", constructorAction: "error" }));
    } catch (error) {
      const reason = error instanceof Error ? error.message : "invalid JSON";
      done(new ApiError("invalid_json", `We could not parse the JSON body of your request: ${reason}.`), undefined);
    }
  });
  app.decorateRequest("accounted", false);
  app.decorateRequest("principal", null);
  const admin = new AdminAuthenticator(options.adminToken);

  app.addHook("onRequest", async (request, reply) => {
    void reply.header("x-request-id", request.id);
    const kind = routeKind(request.routeOptions.url);
    if (kind === "admin") admin.authenticate(request.headers.authorization);
    else if (kind === "api") request.principal = await options.access.authenticate(request.headers.authorization);
  });
  const inFlight = options.inFlight ?? new InFlight();
  const live = new LiveLoad(options.registry);
  const metrics = new Metrics(
    () => live.snapshot(),
    () => inFlight.size,
    () => upstreamGauges(options.registry),
    engineGauge,
  );
  app.addHook("onResponse", async (request, reply) => {
    if (request.accounted) return;
    metrics.observeRequest(request.routeOptions.url ?? "(unmatched)", reply.statusCode, reply.elapsedTime);
    request.log.info(
      { method: request.method, route: request.url, status: reply.statusCode, durationMs: Math.round(reply.elapsedTime) },
      "request",
    );
  });

  registerErrorHandling(app, bodyLimit);
  registerModelRoutes(app, options.registry);
  registerHealthRoutes(app, options.registry, inFlight);
  registerMetricsRoute(app, metrics);
  registerChatCompletionRoutes(app, { registry: options.registry, ranges: options.ranges, access: options.access, inFlight, metrics });
  registerAdminRoutes(app, options.access, options.registry);
  registerDashboardRoutes(app, { registry: options.registry, access: options.access });
  registerWebRoutes(app, { ranges: options.ranges });
  return app;
}

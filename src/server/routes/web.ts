/**
 * The web pages, served by Parley itself (no front-end server, no CDN): the playground
 * at `/`, the dashboard at `/dashboard`, their static assets under `/web/`, and
 * `/web/parameters.json` (the seed's defaults and this deployment's accepted ranges, so
 * the playground shows what the server will actually accept).
 *
 * All of these are public — they hold no data. The pages ask for the API key or the
 * admin token in the browser and send it as a Bearer header on the API calls they make.
 */
import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply } from "fastify";
import { ApiError } from "../../protocol/errors.js";
import { MAX_STOP_STRINGS, SEED_DEFAULTS, SEED_RANGES, type ParameterRanges } from "../../protocol/parameters.js";

/** `web/` at the project root: three levels up from both `src/server/routes/` and `dist/server/routes/`. */
export const WEB_ROOT = fileURLToPath(new URL("../../../web/", import.meta.url));

/** Route patterns that need no key; the app's auth hook compares them with the matched route. */
export const WEB_PUBLIC_ROUTES: readonly string[] = ["/", "/dashboard", "/web/*", "/web/parameters.json"];

export interface WebRouteOptions {
  /** The ranges this deployment accepts, shown beside each control. */
  readonly ranges: ParameterRanges;
  /** Where the assets are read from. Defaults to {@link WEB_ROOT}. */
  readonly webRoot?: string;
}

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".svg": "image/svg+xml",
  ".json": "application/json; charset=utf-8",
  ".png": "image/png",
};

/** Everything from Parley's own origin; no inline script or style, no framing. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** An asset path: plain names in folders, no dot-segments or hidden files. */
const ASSET_PATH = /^(?:[a-z0-9][a-z0-9_-]*\/)*[a-z0-9][a-z0-9_.-]*$/i;

export function registerWebRoutes(app: FastifyInstance, options: WebRouteOptions): void {
  const root = path.resolve(options.webRoot ?? WEB_ROOT);

  const sendFile = async (reply: FastifyReply, relative: string, ifNoneMatch: string | undefined): Promise<FastifyReply> => {
    const extension = path.extname(relative);
    const type = CONTENT_TYPES[extension];
    const file = path.resolve(root, relative);
    const info = type === undefined || !file.startsWith(root + path.sep) ? undefined : await stat(file).catch(() => undefined);
    if (type === undefined || info === undefined || !info.isFile()) {
      throw new ApiError("not_found", `Unknown request URL: GET /web/${relative.slice(0, 100)}.`);
    }
    // Revalidated on every load (no-cache), so an upgraded Parley never serves stale pages.
    const etag = `"${createHash("sha1").update(`${info.size}:${info.mtimeMs}`).digest("hex").slice(0, 16)}"`;
    void reply
      .header("cache-control", "no-cache")
      .header("etag", etag)
      .header("x-content-type-options", "nosniff")
      .header("referrer-policy", "no-referrer");
    if (extension === ".html") void reply.header("content-security-policy", CONTENT_SECURITY_POLICY).header("x-frame-options", "DENY");
    if (ifNoneMatch === etag) return reply.code(304).send();
    return reply.type(type).send(await readFile(file));
  };

  app.get("/", (request, reply) => sendFile(reply, "playground.html", request.headers["if-none-match"]));
  app.get("/dashboard", (request, reply) => sendFile(reply, "dashboard.html", request.headers["if-none-match"]));
  app.get<{ Params: { "*": string } }>("/web/*", (request, reply) => {
    const relative = request.params["*"];
    if (!ASSET_PATH.test(relative)) throw new ApiError("not_found", `Unknown request URL: GET /web/${relative.slice(0, 100)}.`);
    return sendFile(reply, relative, request.headers["if-none-match"]);
  });
  app.get("/web/parameters.json", async (_request, reply) => {
    void reply.header("cache-control", "no-cache");
    return { defaults: SEED_DEFAULTS, ranges: options.ranges, documented_ranges: SEED_RANGES, max_stop_strings: MAX_STOP_STRINGS };
  });
}

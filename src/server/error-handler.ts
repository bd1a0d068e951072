/**
 * Maps everything that goes wrong before a response starts — Fastify's own body and
 * content-type errors included — onto the one error envelope. Bad input is never a 500.
 */
import type { FastifyError, FastifyInstance, FastifyReply } from "fastify";
import { ApiError, toApiError } from "../protocol/errors.js";

function fromFastifyError(error: FastifyError, bodyLimit: number): ApiError | undefined {
  switch (error.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new ApiError("request_too_large", `The request body is larger than the limit of ${bodyLimit} bytes.`);
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new ApiError(
        "unsupported_media_type",
        "Unsupported Content-Type: send the request body as JSON with 'Content-Type: application/json'.",
      );
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return new ApiError("invalid_json", "The request body's length does not match its Content-Length header.");
    default:
      break;
  }
  return undefined;
}

export function sendError(reply: FastifyReply, error: ApiError): FastifyReply {
  if (error.retryAfterSeconds !== undefined) void reply.header("retry-after", String(error.retryAfterSeconds));
  for (const [name, value] of Object.entries(error.headers)) void reply.header(name, value);
  return reply.code(error.status).type("application/json; charset=utf-8").send(error.toBody());
}

export function registerErrorHandling(app: FastifyInstance, bodyLimit: number): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const apiError = error instanceof ApiError ? error : (fromFastifyError(error, bodyLimit) ?? toApiError(error));
    if (apiError.code === "internal_error") request.log.error({ err: error }, "unhandled error");
    else if (apiError.cause !== undefined) request.log.error({ err: apiError.cause, code: apiError.code }, apiError.message);
    return sendError(reply, apiError);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new ApiError("not_found", `Unknown request URL: ${request.method} ${request.url.split("?")[0] ?? ""}.`)),
  );
}

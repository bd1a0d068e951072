/**
 * The admin API's own bearer token (`--admin-token` / `PARLEY_ADMIN_TOKEN`), never an
 * ordinary API key. Compared by SHA-256 digest in constant time.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { ApiError } from "../protocol/errors.js";

const digest = (value: string): Buffer => createHash("sha256").update(value, "utf8").digest();

export class AdminAuthenticator {
  readonly #digest: Buffer | undefined;

  constructor(token: string | undefined) {
    this.#digest = token === undefined || token === "" ? undefined : digest(token);
  }

  authenticate(authorization: string | undefined): void {
    if (this.#digest === undefined) {
      throw new ApiError("permission_denied", "The admin API is disabled: start Parley with --admin-token (or PARLEY_ADMIN_TOKEN).");
    }
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? "");
    if (match?.[1] === undefined) throw new ApiError("invalid_api_key", "The admin API needs 'Authorization: Bearer <admin token>'.");
    if (!timingSafeEqual(digest(match[1]), this.#digest)) {
      throw new ApiError("permission_denied", "This token is not the admin token.");
    }
  }
}

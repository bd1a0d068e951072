/**
 * Bearer API keys (DESIGN §2 stage 2). Keys are compared by their SHA-256 digests with
 * `timingSafeEqual`, against every configured key, so timing reveals neither which key
 * nor how much of one matched. A key never appears in a log line.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { ApiError } from "../protocol/errors.js";

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

export class StaticKeyAuthenticator {
  readonly #digests: readonly Buffer[];

  constructor(keys: readonly string[]) {
    this.#digests = keys.map(digest);
  }

  /** With no keys configured every request is allowed (the server only binds loopback then). */
  get enabled(): boolean {
    return this.#digests.length > 0;
  }

  /** Throws 401 `invalid_api_key` unless `authorization` is `Bearer <a configured key>`. */
  authenticate(authorization: string | undefined): void {
    if (!this.enabled) return;
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? "");
    if (match?.[1] === undefined) {
      throw new ApiError(
        "invalid_api_key",
        "You didn't provide an API key. Provide it in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
      );
    }
    const candidate = digest(match[1]);
    let valid = false;
    for (const known of this.#digests) valid = timingSafeEqual(candidate, known) || valid;
    if (!valid) throw new ApiError("invalid_api_key", "Incorrect API key provided.");
  }
}

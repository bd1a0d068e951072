/** Key management, shared by `parley keys …` and the admin API `/admin/v1/keys`. */
import { ApiError } from "../protocol/errors.js";
import { displayPrefix, generateSecret, hashSecret, newKeyId } from "./keys.js";
import type { KeySpec } from "./key-spec.js";
import type { AccessStore } from "./store.js";
import type { ApiKeyRecord } from "./types.js";

export interface IssuedKey {
  readonly record: ApiKeyRecord;
  /** Shown once, here; only its hash is stored. */
  readonly secret: string;
}

const KEY_ID = /^key_[0-9a-f]{16}$/;

export class KeyService {
  readonly #store: AccessStore;

  constructor(store: AccessStore) {
    this.#store = store;
  }

  async create(spec: KeySpec, now: number = Date.now()): Promise<IssuedKey> {
    const secret = generateSecret();
    const record: ApiKeyRecord = { ...spec, id: newKeyId(), prefix: displayPrefix(secret), hash: hashSecret(secret), createdAt: new Date(now), revokedAt: null };
    await this.#store.createKey(record);
    return { record, secret };
  }

  list(): Promise<ApiKeyRecord[]> {
    return this.#store.listKeys();
  }

  async show(id: string): Promise<ApiKeyRecord> {
    return this.#found(id, KEY_ID.test(id) ? await this.#store.getKey(id) : undefined);
  }

  async revoke(id: string, now: number = Date.now()): Promise<ApiKeyRecord> {
    return this.#found(id, KEY_ID.test(id) ? await this.#store.revokeKey(id, new Date(now)) : undefined);
  }

  /** A new secret for the same key (same id, limits and usage); the old secret stops working at once. */
  async rotate(id: string): Promise<IssuedKey> {
    const current = await this.show(id);
    if (current.revokedAt !== null) throw new ApiError("invalid_value", `Key '${id}' is revoked and cannot be rotated.`, { param: "id" });
    const secret = generateSecret();
    const record = await this.#store.replaceKeySecret(id, hashSecret(secret), displayPrefix(secret));
    return { record: this.#found(id, record), secret };
  }

  #found(id: string, record: ApiKeyRecord | undefined): ApiKeyRecord {
    if (record === undefined) throw new ApiError("not_found", `No key with id '${id.slice(0, 80)}'.`, { param: "id" });
    return record;
  }
}

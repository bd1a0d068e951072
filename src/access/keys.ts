/**
 * API key secrets: generated from 32 random bytes, shown once, stored only as a SHA-256
 * hash. A secret is high-entropy, so a plain hash (not a password KDF) is the right tool:
 * it lets a lookup go straight to the row by its hash index.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** Every Parley secret starts with this, so leaked keys are easy to recognise and scan for. */
export const SECRET_PREFIX = "sk-pl-";

export function generateSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString("base64url");
}

export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

/** Compares two hex digests in constant time. */
export function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a, "hex");
  const right = Buffer.from(b, "hex");
  return left.length === right.length && left.length > 0 && timingSafeEqual(left, right);
}

/** The part of a secret shown in lists: enough to recognise, useless to an attacker. */
export function displayPrefix(secret: string): string {
  return secret.slice(0, SECRET_PREFIX.length + 4);
}

export function newKeyId(): string {
  return `key_${randomBytes(8).toString("hex")}`;
}

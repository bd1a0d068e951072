/** A configuration mistake, with a message that names the flag, file or setting at fault. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

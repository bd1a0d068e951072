/** Which backend serves which model name (DESIGN §2 stage 4). */
import { ApiError } from "../protocol/errors.js";
import type { Backend } from "./backend.js";

export class ModelRegistry {
  readonly #byName = new Map<string, Backend>();
  readonly #backends: Backend[] = [];

  /** Serves `backend` under its id and every alias; a name may be taken only once. */
  add(backend: Backend, aliases: readonly string[] = []): void {
    for (const name of [backend.info.id, ...aliases]) {
      const taken = this.#byName.get(name);
      if (taken !== undefined && taken !== backend) throw new Error(`Model name '${name}' is already served by '${taken.info.id}'.`);
      this.#byName.set(name, backend);
    }
    if (!this.#backends.includes(backend)) this.#backends.push(backend);
  }

  resolve(name: string): Backend {
    const backend = this.#byName.get(name);
    if (backend === undefined) {
      throw new ApiError("model_not_found", `The model '${name}' does not exist or you do not have access to it.`, { param: "model" });
    }
    return backend;
  }

  /** Every served name with its backend, in the order they were added. */
  names(): Array<[string, Backend]> {
    return [...this.#byName.entries()];
  }

  backends(): readonly Backend[] {
    return this.#backends;
  }

  async dispose(): Promise<void> {
    await Promise.all(this.#backends.map((backend) => backend.dispose()));
  }
}

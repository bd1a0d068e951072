/**
 * `parley serve`: resolve the model (downloading once if needed), start listening at
 * once — `/health` answers 503 while the model loads — then load it and serve.
 */
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { Command } from "commander";
import { LlamaLogLevel, type Llama } from "node-llama-cpp";
import { pino, type Logger } from "pino";
import type { AccessControl } from "../access/access-control.js";
import { openAccess } from "../access/open-access.js";
import { readCpuInfo } from "../backends/local/cpu-kernels.js";
import { engineVersion, openEngine } from "../backends/local/engine.js";
import { resolveFlashAttention, type FlashAttentionSetting } from "../backends/local/attention-calibration.js";
import { resolveCpuKernels, type CalibrationKey, type Measurement } from "../backends/local/kernel-calibration.js";
import { loadTuning, tuningStatus } from "../backends/local/llama-tuning.js";
import { PARLEY_KERNELS, parleyKernels } from "../backends/local/parley-kernels.js";
import { LocalBackend } from "../backends/local/local-backend.js";
import { ModelRegistry } from "../backends/registry.js";
import { UpstreamBackend } from "../backends/upstream/upstream-backend.js";
import type { LocalModelConfig } from "../config/model-file.js";
import { buildServeConfig, ConfigError, isLoopbackHost, type ServeConfig, type ServeFlags } from "../config/serve-config.js";
import { DEFAULT_MODEL_URI, defaultModelName, ModelSourceError, resolveModelSource } from "../models/resolve-model.js";
import { synthesizeModel } from "../models/synthesize.js";
import { buildServer } from "../server/app.js";
import { InFlight } from "../server/in-flight.js";

/** The model served when the default model cannot be downloaded; its name says what it is. */
export const DEMO_MODEL_NAME = "parley-demo-random-weights";

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export function registerServeCommand(program: Command): void {
  program
    .command("serve")
    .description("Serve GGUF models, and pools of upstream inference servers, over the Chat Completions API.")
    .option("--config <file.yaml>", "models to serve: local GGUF files and pools of OpenAI-compatible upstream servers (see docs/upstreams.md)")
    .option("-m, --model <file|uri>", `GGUF file, or hf:user/repo:quant / https URL (downloaded once). Defaults to ${DEFAULT_MODEL_URI}`)
    .option("--model-name <name>", "a name clients use for the model (repeatable; the first is its id)", collect)
    .option("--host <host>", "address to bind", "127.0.0.1")
    .option("-p, --port <port>", "port to listen on (0 picks a free one)", "8080")
    .option("--api-key <key>", "an accepted API key (repeatable; also PARLEY_API_KEYS, comma-separated)", collect)
    .option("-t, --threads <n>", "engine threads (default: measured rule, see README)")
    .option("-c, --context-size <n>", "tokens per sequence, prompt plus completion (default 4096)")
    .option("--parallel <n>", "requests decoded together (default 1)")
    .option("--queue-size <n>", "requests that may wait beyond those running (default 16 per parallel slot)")
    .option("--queue-timeout <seconds>", "how long a request may wait for the engine before a 503 (default 120)")
    .option("--body-limit <bytes>", "largest request body (default 1048576)")
    .option("--range <name=min:max>", "accepted range of a sampling parameter, e.g. temperature=0:2 (repeatable)", collect)
    .option("--cache-dir <dir>", "where downloaded and demo models are kept (default $PARLEY_HOME/models or ~/.cache/parley/models)")
    .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent (default info)")
    .option("--data-dir <dir>", "where the SQLite keys and usage database lives (default $PARLEY_HOME or ~/.local/share/parley)")
    .option("--database-url <url>", "PostgreSQL for keys and usage instead of SQLite (also DATABASE_URL)")
    .option("--redis-url <url>", "Redis for rate-limit counters shared by replicas (also REDIS_URL)")
    .option("--flash-attention <mode>", "llama.cpp's flash attention: auto (measured on the model once against its plain attention path, then cached), on or off (see docs/engine.md)", "auto")
    .option("--cpu-kernels <variant>", "llama.cpp CPU kernels: auto (measured on the model once, then cached), ggml (ggml's own choice), a prebuilt variant such as haswell, alderlake, zen4, or parley (Parley's own build, where it was built; see docs/engine.md)", "auto")
    .option("--no-threadpool", "run llama.cpp without Parley's persistent threadpool (for comparison; slower)")
    .option("--no-native-loop", "decode through node-llama-cpp's evaluate instead of Parley's native loop (for comparison; slower)")
    .option("--drain-timeout <seconds>", "on SIGTERM, how long in-flight requests may finish before they are stopped (default 30)")
    .option("--admin-token <token>", "bearer token of the admin API /admin/v1 (also PARLEY_ADMIN_TOKEN); without it the admin API is off")
    .action(async (flags: ServeFlags) => {
      let config: ServeConfig;
      try {
        config = buildServeConfig(flags);
      } catch (error) {
        if (error instanceof ConfigError) exitWith(error.message);
        throw error;
      }
      await serve(config);
    });
}

function exitWith(message: string): never {
  process.stderr.write(`parley: ${message}\n`);
  process.exit(1);
}

interface ModelChoice {
  readonly path: string;
  readonly names: readonly string[];
}

/** The user's model, or the default one; offline, the default becomes a labelled demo model. */
async function chooseModel(model: LocalModelConfig, config: ServeConfig, log: Logger): Promise<ModelChoice> {
  const source = model.source;
  if (source !== undefined) {
    const file = await resolveModelSource(source, { cacheDir: config.cacheDir });
    return { path: file, names: model.names.length > 0 ? model.names : [defaultModelName(source)] };
  }
  try {
    const file = await resolveModelSource(DEFAULT_MODEL_URI, { cacheDir: config.cacheDir });
    return { path: file, names: model.names.length > 0 ? model.names : [defaultModelName(DEFAULT_MODEL_URI)] };
  } catch (error) {
    if (!(error instanceof ModelSourceError)) throw error;
    log.warn(
      { reason: error.message },
      `The default model ${DEFAULT_MODEL_URI} could not be downloaded (is this machine offline?). ` +
        `Serving '${DEMO_MODEL_NAME}' instead: a synthetic model with RANDOM weights whose output is gibberish. ` +
        "Pass --model FILE.gguf to serve a real model.",
    );
    const demoPath = path.join(config.cacheDir, `${DEMO_MODEL_NAME}.gguf`);
    await mkdir(config.cacheDir, { recursive: true });
    if (!existsSync(demoPath)) await synthesizeModel({ architecture: "qwen2", shape: "tiny", type: "q8_0", outputPath: demoPath, name: DEMO_MODEL_NAME });
    // Every name of the demo says so, since a response's `model` field is the name asked for.
    return { path: demoPath, names: [DEMO_MODEL_NAME] };
  }
}

let lastTuningWarning: string | null = null;

/** Logs what the tuning addon last could not do, once per distinct message. */
function warnTuning(log: Logger): void {
  const { lastError } = tuningStatus();
  if (lastError !== null && lastError !== lastTuningWarning) log.warn(lastError);
  lastTuningWarning = lastError;
}

/** Milliseconds rounded to microseconds for the log: a tiny model's steps differ by a few of them between variants. */
const toMicroseconds = (ms: number): number => Number(ms.toFixed(3));

/** A local model as the engine's measurements see it. */
interface EngineModel {
  readonly path: string;
  readonly threads: number | undefined;
  readonly parallel: number;
}

/** The engine, and the flash attention setting of each local model, in the order given. */
interface StartedEngine {
  readonly llama: Llama;
  readonly flashAttention: readonly FlashAttentionSetting[];
}

/**
 * Measures (or recalls) the CPU kernels on the first local model and the attention path of
 * each, then opens the engine.
 */
async function startEngine(config: ServeConfig, models: readonly [EngineModel, ...EngineModel[]], log: Logger): Promise<StartedEngine> {
  const [first] = models;
  const modelPath = first.path;
  const threads = first.threads;
  const parallel = Math.max(...models.map((each) => each.parallel));
  const tunable = loadTuning({ threadpool: config.engine.threadpool, nativeLoop: config.engine.nativeLoop }).active;
  // What both measurements depend on (their cache key).
  const settings: CalibrationKey = {
    cpu: readCpuInfo(),
    engineVersion: engineVersion(),
    modelPath,
    threads,
    parallel,
    threadpool: config.engine.threadpool,
    nativeLoop: config.engine.nativeLoop,
    parleyKernels: parleyKernels().file === null ? null : (parleyKernels().stamp ?? "built"),
  };
  const kernels = await resolveCpuKernels({
    ...settings,
    requested: config.engine.cpuKernels,
    cacheDir: config.cacheDir,
    tunable,
    onMeasuring: (cacheFile) =>
      log.info({ file: modelPath, parallel, cache: cacheFile }, "Measuring llama.cpp's CPU kernels on this model, once for these settings"),
    onFailure: (variant, error) => log.warn({ cpuKernels: variant ?? "ggml's choice", reason: error.message }, "A CPU kernel variant could not be measured"),
  });
  if (kernels.variant === PARLEY_KERNELS && parleyKernels().file === null) {
    log.warn({ reason: parleyKernels().reason }, "Parley's CPU kernels are not built here; llama.cpp's own are used (docs/engine.md)");
  }
  // Timed with the kernels chosen above, in child processes, before this process loads anything.
  const flashAttention: FlashAttentionSetting[] = [];
  for (const model of models) flashAttention.push(await chooseAttention(config, { ...settings, modelPath: model.path, threads: model.threads, parallel: model.parallel }, kernels.variant, log));
  const engine = await openEngine({
    threadpool: config.engine.threadpool,
    nativeLoop: config.engine.nativeLoop,
    cpuKernels: kernels.variant,
    logLevel: LlamaLogLevel.warn,
    logger: (level, message) => log.debug({ engine: level }, message.trim()),
  });
  const { tuning } = engine;
  if (tuning.active) {
    const measured = kernels.calibration?.measurements.map((each) => ({
      cpuKernels: each.loaded,
      prefillMs: toMicroseconds(each.prefillMs),
      stepMs: toMicroseconds(each.stepMs),
    }));
    log.info(
      { threadpool: tuning.threadpool, nativeLoop: tuning.nativeLoop, cpuKernels: tuning.cpuKernelsLoaded, why: kernels.reason, measured },
      "llama.cpp engine tuned",
    );
    warnTuning(log);
  } else {
    log.warn({ reason: tuning.reason }, "llama.cpp engine runs without Parley's tuning addon: decoding is slower (docs/engine.md)");
  }
  return { llama: engine.llama, flashAttention };
}

/** `--flash-attention` for one local model, measured (or recalled) with the kernels the engine loads, and logged. */
async function chooseAttention(config: ServeConfig, settings: CalibrationKey, variant: string | undefined, log: Logger): Promise<FlashAttentionSetting> {
  const file = settings.modelPath;
  const attention = await resolveFlashAttention({
    ...settings,
    requested: config.engine.flashAttention,
    variant,
    cacheDir: config.cacheDir,
    onMeasuring: (cache) => log.info({ file, parallel: settings.parallel, cache }, "Measuring llama.cpp's two attention paths on this model, once for these settings"),
  });
  const timed = (measurement: Measurement): { stepMs: number; deepStepMs: number | undefined } => ({
    stepMs: toMicroseconds(measurement.stepMs),
    deepStepMs: measurement.deepStepMs === undefined ? undefined : toMicroseconds(measurement.deepStepMs),
  });
  log.info(
    {
      file,
      flashAttention: attention.flashAttention,
      why: attention.reason,
      ...(attention.calibration === undefined ? {} : { measured: { on: timed(attention.calibration.on), off: timed(attention.calibration.off) } }),
    },
    "llama.cpp attention path chosen",
  );
  return attention.flashAttention;
}

export async function serve(config: ServeConfig): Promise<void> {
  const log = pino({ level: config.logLevel, redact: ["req.headers.authorization"] });
  let access: AccessControl;
  try {
    access = await openAccess(config.access, config.apiKeys);
  } catch (error) {
    exitWith(error instanceof Error ? error.message : String(error));
  }
  if (!(await access.authRequired())) {
    if (!isLoopbackHost(config.host)) {
      await access.close();
      exitWith(`refusing to serve on ${config.host} without API keys: create one (parley keys create), pass --api-key (or PARLEY_API_KEYS), or bind a loopback address.`);
    }
    log.warn(`No API key is configured: anyone on this machine can use the API at ${config.host}. Create one with 'parley keys create' or pass --api-key.`);
  }

  // Upstream pools are ready at once; local models are resolved now (downloading once if
  // needed) and loaded after the server listens, so /health can say they are loading.
  const choices = new Map<LocalModelConfig, ModelChoice>();
  for (const model of config.models) {
    if (model.backend !== "local") continue;
    try {
      choices.set(model, await chooseModel(model, config, log));
    } catch (error) {
      if (error instanceof ModelSourceError) exitWith(error.message);
      throw error;
    }
  }
  // One engine, one CPU kernel variant, for every local model: chosen on the first one; and
  // each model's attention path. Measuring (in child processes, which load the models) starts
  // now and goes on while the server listens; /health says the models are loading.
  const localModels = [...choices.keys()];
  const [first, ...others] = [...choices].map(([model, choice]): EngineModel => ({ path: choice.path, threads: model.threads, parallel: model.parallel }));
  const engine = first === undefined ? undefined : startEngine(config, [first, ...others], log);
  let started: StartedEngine | undefined;
  engine?.then((each) => (started = each)).catch(() => undefined); // a failure is reported by each model's load()
  const registry = new ModelRegistry();
  const locals: Array<{ readonly backend: LocalBackend; readonly path: string }> = [];
  for (const model of config.models) {
    if (model.backend === "upstream") {
      const backend = new UpstreamBackend(model);
      registry.add(backend, model.names.slice(1));
      backend.start();
      continue;
    }
    const choice = choices.get(model);
    if (choice === undefined || engine === undefined) throw new Error("a local model was not resolved");
    const index = localModels.indexOf(model); // the engine's settings come in this order
    const [id = DEMO_MODEL_NAME, ...aliases] = choice.names;
    const backend = new LocalBackend(engine.then((each) => each.llama), {
      id,
      modelPath: choice.path,
      threads: model.threads,
      contextSize: model.contextSize,
      parallel: model.parallel,
      queueSize: model.queueSize,
      queueTimeoutMs: model.queueTimeoutMs,
      flashAttention: engine.then((each) => each.flashAttention[index] ?? "auto"),
    });
    try {
      registry.add(backend, aliases);
    } catch (error) {
      exitWith(error instanceof Error ? error.message : String(error));
    }
    locals.push({ backend, path: choice.path });
  }

  const inFlight = new InFlight();
  const app = buildServer({
    registry,
    access,
    inFlight,
    adminToken: config.adminToken,
    ranges: config.ranges,
    bodyLimit: config.bodyLimit,
    loggerInstance: log,
  });
  const address = await app.listen({ host: config.host, port: config.port });
  log.info({ address, models: registry.names().map(([name]) => name) }, `Parley listening on ${address}`);

  // Shutdown reads like the engine's own lifetimes: stop taking requests (503, /ready 503),
  // drain those in flight up to the deadline, stop the rest cleanly, then close and dispose.
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, inFlight: inFlight.size, drainTimeoutMs: config.drainTimeoutMs }, "draining");
    const drained = await inFlight.drain(config.drainTimeoutMs);
    log.info(drained, "drained; shutting down");
    await app.close();
    await registry.dispose();
    await access.close();
    // An engine still measuring is not waited for: its measuring children end with this process.
    await started?.llama.dispose();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));

  for (const { backend, path: file } of locals) {
    const id = backend.info.id;
    try {
      await backend.load();
      log.info({ model: id, file, ...backend.engine }, `Model '${id}' loaded`);
      warnTuning(log); // e.g. a threadpool that could not be created for this model's context
    } catch (error) {
      log.fatal({ err: error, file }, `Model '${id}' failed to load`);
      await app.close();
      process.exit(1);
    }
  }
}

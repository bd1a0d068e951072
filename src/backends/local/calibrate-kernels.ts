/**
 * One measurement of `kernel-calibration.ts`, in a process of its own because the CPU kernel
 * variant is fixed for a process once llama.cpp loads its backends:
 *
 *   node calibrate-kernels.js '{"variant":"haswell","modelPath":"m.gguf","parallel":4,"threads":2}'
 *
 * Loads the model with that variant and the tuning Parley serves with, then times a prompt of
 * PROMPT_TOKENS tokens (best of 2) and a decode step with `parallel` sequences, each sampling
 * its token greedily (median of STEPS steps after a warm-up). Prints one JSON line:
 * `{ "loaded": "haswell", "threads": 2, "prefillMs": 41.2, "stepMs": 47.9 }`.
 */
import { pathToFileURL } from "node:url";
import { LlamaLogLevel, type Token } from "node-llama-cpp";
import { openEngine } from "./engine.js";
import { PROMPT_TOKENS, type CalibrationRequest, type CalibrationResult } from "./kernel-calibration.js";
import { tuningStatus } from "./llama-tuning.js";
import { defaultThreads } from "./threads.js";

const STEPS = 6;

const TEXT = "The keeper of the lighthouse climbed the stairs each evening and wrote down what the sea had brought. ";

async function measure(request: CalibrationRequest): Promise<CalibrationResult> {
  const { llama, tuning } = await openEngine({ cpuKernels: request.variant ?? undefined, threadpool: request.threadpool, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: request.modelPath });
  const threads = request.threads ?? defaultThreads(model.size, llama.cpuMathCores, tuning.active && tuning.threadpool);
  const context = await model.createContext({
    contextSize: Math.min(PROMPT_TOKENS + STEPS + 16, model.trainContextSize),
    sequences: request.parallel,
    threads,
  });
  let text = TEXT;
  while (model.tokenize(text).length < PROMPT_TOKENS) text += TEXT;
  const prompt = model.tokenize(text).slice(0, PROMPT_TOKENS);
  const sequences = Array.from({ length: request.parallel }, () => context.getSequence());
  const first = sequences[0]!;

  let prefillMs = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 2; round++) {
    const start = performance.now();
    await first.controlledEvaluate(prompt);
    prefillMs = Math.min(prefillMs, performance.now() - start);
    await first.clearHistory();
  }

  // Every sequence decodes in lockstep, as Parley's decode loop does: one batch per step.
  const next = { generateNext: { token: true, options: { temperature: 0 } } } as const;
  let inputs = sequences.map((_, index) => [prompt[index % prompt.length]!, [prompt[(index + 1) % prompt.length]!, next]] as const);
  const steps: number[] = [];
  for (let step = 0; step < STEPS + 1; step++) {
    const start = performance.now();
    const results = await Promise.all(sequences.map((sequence, index) => sequence.controlledEvaluate(inputs[index] as never)));
    if (step > 0) steps.push(performance.now() - start); // the first step also evaluates the prompts
    inputs = results.map((result) => {
      const token = (result.at(-1) as { next?: { token?: Token | null } } | undefined)?.next?.token ?? prompt[0]!;
      return [[token, next]] as never;
    });
  }
  steps.sort((a, b) => a - b);
  const loaded = tuning.active ? tuningStatus().cpuKernelsLoaded : null;
  await context.dispose();
  await model.dispose();
  return { loaded, threads, prefillMs, stepMs: steps[Math.floor(steps.length / 2)] ?? Number.NaN };
}

// Run as a program only (kernel-calibration.ts spawns it), never on import.
const argument = process.argv[2];
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href && argument !== undefined) {
  const result = await measure(JSON.parse(argument) as CalibrationRequest);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

/**
 * One measurement of `kernel-calibration.ts`, in a process of its own because the CPU kernel
 * variant is fixed for a process once llama.cpp loads its backends:
 *
 *   node calibrate-kernels.js '{"variant":"haswell","modelPath":"m.gguf","parallel":4,"threads":2}'
 *
 * Loads the model with that variant and the tuning Parley serves with, then times a prompt of
 * PROMPT_TOKENS tokens (best of 2) and a decode step with `parallel` sequences, each sampling
 * its token greedily (the median of STEPS steps after the prompts). Prints one JSON line:
 * `{ "loaded": "haswell", "threads": 2, "prefillMs": 41.2, "stepMs": 47.9, "stepDepth": 12, "loop": "native" }`.
 *
 * `flashAttention` creates the context with llama.cpp's flash attention forced on or off
 * (absent: llama.cpp's own choice). `deep` also times the steps after every sequence holds a
 * PROMPT_TOKENS-token prompt (`deepStepMs` at `deepStepDepth`): attention's share of a step grows
 * with the tokens a sequence holds, and how fast differs between the two attention paths
 * (attention-calibration.ts).
 *
 * It times the loop the server will decode with: Parley's native loop (one llama_decode and
 * an argmax per sequence a step, in the addon's thread) unless `nativeLoop` is off or the
 * addon is missing, else node-llama-cpp's `evaluate`, whose per-sequence sampling calls add a
 * cost that does not depend on the kernels and so blur the ranking (on Qwen2-0.5B at
 * --parallel 8 it picked `haswell`, which serves 4% slower there than `alderlake`).
 */
import { pathToFileURL } from "node:url";
import { LlamaLogLevel, type LlamaContextSequence, type Token } from "node-llama-cpp";
import { openEngine } from "./engine.js";
import { PROMPT_TOKENS, type CalibrationRequest, type CalibrationResult } from "./kernel-calibration.js";
import { nativeLoopAddon, tuningStatus } from "./llama-tuning.js";
import { createContextWithLoop, type NativeDecodeLoop } from "./native-decode-loop.js";
import { GREEDY } from "./sequence-decoder.js";
import { defaultThreads } from "./threads.js";

/** Decode steps timed; their median counts. */
const STEPS = 16;

const TEXT = "The keeper of the lighthouse climbed the stairs each evening and wrote down what the sea had brought. ";

type Timings = Pick<CalibrationResult, "prefillMs" | "stepMs" | "stepDepth" | "deepStepMs" | "deepStepDepth" | "loop">;

/** Step times of every sequence decoding from prompts of one length, and the mean tokens a sequence held during them. */
interface Steps {
  readonly stepMs: number;
  readonly depth: number;
}

/**
 * The mean tokens a sequence holds during the timed steps after an `opening`-token prompt: the
 * steps that follow the third token (the first ones may share a batch with other prompts).
 */
const meanDepth = (opening: number): number => opening + 2 + STEPS / 2;

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;

/** The fastest of two timed runs of `run`, in milliseconds; `reset` runs untimed after each. */
async function fastestOfTwo(run: () => Promise<void>, reset?: () => Promise<void>): Promise<number> {
  let fastest = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 2; round++) {
    const start = performance.now();
    await run();
    fastest = Math.min(fastest, performance.now() - start);
    await reset?.();
  }
  return fastest;
}

async function measure(request: CalibrationRequest): Promise<CalibrationResult> {
  const { llama, tuning } = await openEngine({
    cpuKernels: request.variant ?? undefined,
    threadpool: request.threadpool,
    nativeLoop: request.nativeLoop,
    logLevel: LlamaLogLevel.error,
  });
  const model = await llama.loadModel({ modelPath: request.modelPath });
  const threads = request.threads ?? defaultThreads(model.size, llama.cpuMathCores, tuning.active && tuning.threadpool);
  const { context, sequences, loop } = await createContextWithLoop(
    nativeLoopAddon(),
    () =>
      model.createContext({
        contextSize: Math.min(PROMPT_TOKENS + STEPS + 16, model.trainContextSize),
        sequences: request.parallel,
        threads,
        ...(request.flashAttention === undefined ? {} : { flashAttention: request.flashAttention }),
      }),
    request.parallel,
  );
  let text = TEXT;
  while (model.tokenize(text).length < PROMPT_TOKENS) text += TEXT;
  const prompt = model.tokenize(text).slice(0, PROMPT_TOKENS);
  const timings = loop === undefined ? await timeEvaluate(sequences, prompt, request.deep === true) : await timeNativeLoop(loop, sequences, prompt, request.deep === true);
  loop?.close();
  const loaded = tuning.active ? tuningStatus().cpuKernelsLoaded : null;
  await context.dispose();
  await model.dispose();
  return { loaded, threads, ...timings };
}

/** `length` tokens of the prompt for sequence `index`, rotated so that each sequence's differ: a prompt to decode after. */
const opening = (prompt: readonly Token[], index: number, length = 2): Token[] =>
  Array.from({ length }, (_, offset) => prompt[(index + offset) % prompt.length]!);

async function timeNativeLoop(loop: NativeDecodeLoop, sequences: readonly LlamaContextSequence[], prompt: readonly Token[], deep: boolean): Promise<Timings> {
  const first = sequences[0]!;
  const prefillMs = await fastestOfTwo(async () => {
    for await (const token of loop.tokens(first, prompt, 0, GREEDY, 1)) void token;
  });
  // Every sequence decodes from its own prompt, one batch per step; the first sequence's
  // tokens arrive once a step. Its first two may share a step with the others' prompts.
  const steps = async (length: number): Promise<Steps> => {
    const arrivals: number[] = [];
    await Promise.all(
      sequences.map(async (sequence, index) => {
        for await (const token of loop.tokens(sequence, opening(prompt, index, length), 0, GREEDY, STEPS + 3)) {
          void token;
          if (index === 0) arrivals.push(performance.now());
        }
      }),
    );
    return { stepMs: median(arrivals.slice(3).map((at, index) => at - arrivals[index + 2]!)), depth: meanDepth(length) };
  };
  return { prefillMs, ...withDepth(await steps(2), deep ? await steps(PROMPT_TOKENS) : undefined), loop: "native" };
}

/** The shallow and (when timed) deep steps as the result reports them. */
function withDepth(shallow: Steps, deep: Steps | undefined): Pick<Timings, "stepMs" | "stepDepth" | "deepStepMs" | "deepStepDepth"> {
  return { stepMs: shallow.stepMs, stepDepth: shallow.depth, ...(deep === undefined ? {} : { deepStepMs: deep.stepMs, deepStepDepth: deep.depth }) };
}

async function timeEvaluate(sequences: readonly LlamaContextSequence[], prompt: Token[], deep: boolean): Promise<Timings> {
  const first = sequences[0]!;
  const prefillMs = await fastestOfTwo(
    async () => void (await first.controlledEvaluate(prompt)),
    () => first.clearHistory(),
  );

  // Every sequence decodes in lockstep, as the library loop does: one batch per step.
  const next = { generateNext: { token: true, options: { temperature: 0 } } } as const;
  const steps = async (length: number): Promise<Steps> => {
    await Promise.all(sequences.map((sequence) => sequence.clearHistory()));
    let inputs = sequences.map((_, index) => {
      const tokens = opening(prompt, index, length);
      return [...tokens.slice(0, -1), [tokens.at(-1)!, next]] as const;
    });
    const times: number[] = [];
    for (let step = 0; step < STEPS + 1; step++) {
      const start = performance.now();
      const results = await Promise.all(sequences.map((sequence, index) => sequence.controlledEvaluate(inputs[index] as never)));
      if (step > 0) times.push(performance.now() - start); // the first step also evaluates the prompts
      inputs = results.map((result) => {
        const token = (result.at(-1) as { next?: { token?: Token | null } } | undefined)?.next?.token ?? prompt[0]!;
        return [[token, next]] as never;
      });
    }
    return { stepMs: median(times), depth: meanDepth(length) };
  };
  return { prefillMs, ...withDepth(await steps(2), deep ? await steps(PROMPT_TOKENS) : undefined), loop: "library" };
}

// Run as a program only (kernel-calibration.ts spawns it), never on import.
const argument = process.argv[2];
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href && argument !== undefined) {
  const result = await measure(JSON.parse(argument) as CalibrationRequest);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

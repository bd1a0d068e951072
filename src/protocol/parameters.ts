/**
 * Sampling parameters: the seed's defaults and the ranges a deployment accepts.
 *
 * Defaults are always the seed's. Ranges start as the seed's and may be widened (or
 * narrowed) per deployment in the config, e.g. OpenAI's `temperature` up to 2.
 */

export interface Range {
  readonly min: number;
  readonly max: number;
  /** Whether `min` itself is excluded (`top_p` is in (0, 1]). */
  readonly minExclusive?: boolean;
}

export interface ParameterRanges {
  readonly temperature: Range;
  readonly top_p: Range;
  readonly max_tokens: Range;
  readonly presence_penalty: Range;
  readonly frequency_penalty: Range;
}

export const SEED_RANGES: ParameterRanges = {
  temperature: { min: 0, max: 1 },
  top_p: { min: 0, max: 1, minExclusive: true },
  max_tokens: { min: 1, max: 4096 },
  presence_penalty: { min: -2, max: 2 },
  frequency_penalty: { min: -2, max: 2 },
};

export const SEED_DEFAULTS = {
  temperature: 0.7,
  top_p: 0.7,
  max_tokens: 200,
  presence_penalty: 0,
  frequency_penalty: 0,
  stream: false,
} as const;

/** At most this many stop strings, as OpenAI allows. */
export const MAX_STOP_STRINGS = 4;

/**
 * Budgets and cost. A session may cap its model calls, tool calls, input and output tokens, cost in USD
 * and wall time; cost comes from a pricing table per model (USD per million input, output, cache-write and
 * cache-read tokens) that an agent or a session may override. At 90% of any budget the model gets one
 * last turn with no tools and is told to answer; at 100% the session stops with `budget_<kind>` and, as
 * configured, undoes its writes. Sandbox-safe and pure: the workflow calls these between steps.
 */
import { z } from 'zod';
import { DurationSchema } from './duration.js';

/** One model's prices, in USD per million tokens. */
export const ModelPriceSchema = z.strictObject({
  input: z.number().nonnegative(),
  output: z.number().nonnegative(),
  /** Writing the prompt cache (`cache_creation_input_tokens`); the input price when absent. */
  cacheWrite: z.number().nonnegative().optional(),
  /** Reading the prompt cache (`cache_read_input_tokens`); the input price when absent. */
  cacheRead: z.number().nonnegative().optional(),
});
/** One model's prices. */
export type ModelPrice = z.infer<typeof ModelPriceSchema>;

/** A pricing table: prices by model name. */
export const PricingSchema = z.record(z.string().min(1), ModelPriceSchema);
/** A pricing table. */
export type Pricing = z.infer<typeof PricingSchema>;

/**
 * Keel's built-in prices (USD per million tokens, Anthropic's list prices when written). Override or extend
 * them with `pricing` on an agent or a session; a model missing from the table has no cost (unless the
 * session has a `usd` budget, which then refuses to start).
 */
export const DEFAULT_PRICING: Pricing = {
  'claude-opus-4-1': { input: 15, output: 75, cacheWrite: 18.75, cacheRead: 1.5 },
  'claude-opus-4-5': { input: 5, output: 25, cacheWrite: 6.25, cacheRead: 0.5 },
  'claude-sonnet-4-5': { input: 3, output: 15, cacheWrite: 3.75, cacheRead: 0.3 },
  'claude-sonnet-4-0': { input: 3, output: 15, cacheWrite: 3.75, cacheRead: 0.3 },
  'claude-haiku-4-5': { input: 1, output: 5, cacheWrite: 1.25, cacheRead: 0.1 },
  'claude-3-5-haiku-latest': { input: 0.8, output: 4, cacheWrite: 1, cacheRead: 0.08 },
};

/** What a session may spend; every limit is optional and positive. */
export const BudgetSchema = z.strictObject({
  /** Model calls across the session. */
  iterations: z.number().int().positive().optional(),
  /** Tool calls across the session. */
  toolCalls: z.number().int().positive().optional(),
  /** Input tokens across the session (cache reads and writes included). */
  inputTokens: z.number().int().positive().optional(),
  /** Output tokens across the session. */
  outputTokens: z.number().int().positive().optional(),
  /** Model cost in USD, from the pricing table. */
  usd: z.number().positive().optional(),
  /** Time since the session started (waiting for people and messages included). */
  wallTime: DurationSchema.optional(),
  /** What a session stopped at 100% does with its completed writes (`compensate`: undo them). */
  onExhausted: z.enum(['compensate', 'keep']).default('compensate'),
});
/** A validated budget. */
export type Budget = z.output<typeof BudgetSchema>;
/** The kinds of budget, as they appear in `budget_<kind>` stop reasons. */
export type BudgetKind = 'iterations' | 'toolCalls' | 'inputTokens' | 'outputTokens' | 'usd' | 'wallTime';

/** Share of a budget at which the model is told to answer with no more tools. */
export const FINAL_TURN_AT = 0.9;

/** Token counts and cost, summed over a session's model calls. */
export interface Spend {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
  /** Model cost in USD, when the model has a price. */
  cost_usd: number;
}

/** Nothing spent yet. */
export function noSpend(): Spend {
  return { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, cost_usd: 0 };
}

/** Cost in USD of one call's tokens at a price. */
export function costOf(tokens: Omit<Spend, 'cost_usd'>, price: ModelPrice): number {
  const perToken = (usdPerMillion: number) => usdPerMillion / 1_000_000;
  return (
    tokens.input_tokens * perToken(price.input) +
    tokens.output_tokens * perToken(price.output) +
    tokens.cache_creation_input_tokens * perToken(price.cacheWrite ?? price.input) +
    tokens.cache_read_input_tokens * perToken(price.cacheRead ?? price.input)
  );
}

/** What a session has used, in each unit a budget can cap. */
export interface Used {
  iterations: number;
  toolCalls: number;
  spend: Spend;
  elapsedMs: number;
}

/** The budget most used, as a share of its limit (`share` 0 when there is no budget). */
export function mostUsed(budget: Budget, used: Used, toMs: (d: number | string) => number): { kind?: BudgetKind; share: number } {
  const shares: Array<[BudgetKind, number | undefined, number]> = [
    ['iterations', budget.iterations, used.iterations],
    ['toolCalls', budget.toolCalls, used.toolCalls],
    ['inputTokens', budget.inputTokens, used.spend.input_tokens + used.spend.cache_creation_input_tokens + used.spend.cache_read_input_tokens],
    ['outputTokens', budget.outputTokens, used.spend.output_tokens],
    ['usd', budget.usd, used.spend.cost_usd],
    ['wallTime', budget.wallTime === undefined ? undefined : toMs(budget.wallTime), used.elapsedMs],
  ];
  let top: { kind?: BudgetKind; share: number } = { share: 0 };
  for (const [kind, limit, value] of shares) {
    if (limit === undefined) continue;
    const share = value / limit;
    if (share > top.share) top = { kind, share };
  }
  return top;
}

/** The price of `model`: the session's or agent's table first, then Keel's. */
export function priceOf(model: string, ...tables: Array<Pricing | undefined>): ModelPrice | undefined {
  for (const table of tables) if (table?.[model]) return table[model];
  return DEFAULT_PRICING[model];
}

/**
 * The eval suite file (`keel eval <suite.json>`): a named list of cases, each a prompt with what a good
 * session does with it (the tools it calls, as a set or an exact order; checks on its answer; at most how
 * many model calls), plus defaults the cases share (agent, model, user, the approver who decides pending
 * approvals, a per-case timeout, prices). Parsed by zod once, at the edge: a bad file is one line naming
 * the file, the case and the field.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { toMs } from '../tools/define.js';
import { PricingSchema } from '../workflows/budget.js';
import { DurationSchema } from '../workflows/duration.js';
import { SessionUserSchema } from '../workflows/types.js';

/** The suite file could not be read or is not a valid suite; the message is one line naming what is wrong. */
export class SuiteError extends Error {
  override readonly name = 'SuiteError';
}

/** One string or a list of them, as a list. */
const Strings = z.union([z.string().min(1), z.array(z.string().min(1))]).transform((v) => (Array.isArray(v) ? v : [v]));

/**
 * The tools a case expects, one of:
 * - `{ "set": [...] }`: each tool called successfully (outcome `ok`) at least once, in any order; with
 *   `allowExtra: false` (the default) a call of any other tool, whatever its outcome, fails the case;
 *   `{ "set": [] }` means no tool calls at all.
 * - `{ "order": [...] }`: the successful calls, in the order the model issued them, are exactly this list
 *   (calls that failed or were refused are not part of the sequence); `{ "order": [] }`: no successful call.
 */
export const ExpectedToolsSchema = z
  .strictObject({
    set: z.array(z.string().min(1)).optional(),
    order: z.array(z.string().min(1)).optional(),
    allowExtra: z.boolean().optional(),
  })
  .superRefine((v, ctx) => {
    if ((v.set === undefined) === (v.order === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of "set" (any order) or "order" (this exact sequence)' });
    }
    if (v.allowExtra !== undefined && v.set === undefined) {
      ctx.addIssue({ code: 'custom', path: ['allowExtra'], message: 'goes with "set" only ("order" is an exact sequence)' });
    }
  })
  .transform((v): ExpectedTools => (v.order !== undefined ? { order: v.order } : { set: v.set!, allowExtra: v.allowExtra ?? false }));
/** The tools a case expects. */
export type ExpectedTools = { set: string[]; allowExtra: boolean } | { order: string[] };

/**
 * Checks on the session's final answer: every `contains` string is in it, no `notContains` string is, and
 * it matches the regular expression `matches` (JavaScript syntax). `ignoreCase` (false) applies to all three.
 */
export const AnswerChecksSchema = z.strictObject({
  contains: Strings.optional(),
  notContains: Strings.optional(),
  matches: z
    .string()
    .min(1)
    .refine((source) => {
      try {
        new RegExp(source);
        return true;
      } catch {
        return false;
      }
    }, 'not a valid regular expression')
    .optional(),
  ignoreCase: z.boolean().default(false),
});
/** Checks on an answer. */
export type AnswerChecks = z.output<typeof AnswerChecksSchema>;

/** A per-case timeout: a duration (`90s`, `2m`) or milliseconds, as milliseconds. */
const TimeoutSchema = DurationSchema.transform((d) => toMs(d)).refine((ms) => ms >= 1000, 'at least 1s');

/** Who approves pending approvals during the run (roles default to `approver`). */
export const EvalApproverSchema = z.strictObject({
  id: z.string().min(1).max(200),
  roles: z.array(z.string().min(1).max(100)).max(50).default(['approver']),
});

/** What every case gets unless it says otherwise. */
export const SuiteDefaultsSchema = z.strictObject({
  /** The agent (`defineAgent`) sessions run as (the worker's built-in `default` agent when unset). */
  agent: z.string().min(1).max(64).optional(),
  /** The model (`scripted/<scenario>` on the scripted model); else the agent's, else KEEL_MODEL. */
  model: z.string().min(1).max(200).optional(),
  /** Who asks (`keel-eval`, no roles). */
  user: SessionUserSchema.strict().default({ id: 'keel-eval', roles: [] }),
  /**
   * Who approves every pending approval, as a person would. Without one (or when the session refuses this
   * approver), a case whose session waits for approval is given up on at once and its session cancelled.
   */
  approver: EvalApproverSchema.optional(),
  /** How long a case may take before it fails and its session is cancelled (`2m`). */
  timeout: TimeoutSchema.default(120_000),
  /**
   * Model prices (USD per million tokens) by model name, over Keel's: a case whose model (its own, the
   * defaults' or `--model`) is here is priced so; Keel's table prices the rest.
   */
  pricing: PricingSchema.optional(),
});

/** One case: a prompt and what a good session does with it. */
export const EvalCaseSchema = z.strictObject({
  /** Unique in the suite; names the case in reports and baselines. */
  name: z.string().min(1).max(100),
  prompt: z.string().min(1),
  agent: z.string().min(1).max(64).optional(),
  model: z.string().min(1).max(200).optional(),
  tools: ExpectedToolsSchema.optional(),
  answer: AnswerChecksSchema.optional(),
  /** At most this many model calls; more fails the case. */
  maxSteps: z.number().int().min(1).optional(),
  /** Overrides the suite's timeout. */
  timeout: TimeoutSchema.optional(),
});
/** One validated case. */
export type EvalCase = z.output<typeof EvalCaseSchema>;

/** A suite file. */
export const EvalSuiteSchema = z
  .strictObject({
    name: z.string().min(1).max(100),
    description: z.string().optional(),
    defaults: SuiteDefaultsSchema.default({ user: { id: 'keel-eval', roles: [] }, timeout: 120_000 }),
    cases: z.array(EvalCaseSchema).min(1, 'a suite needs at least one case'),
  })
  .superRefine((suite, ctx) => {
    const seen = new Set<string>();
    suite.cases.forEach((c, i) => {
      if (seen.has(c.name)) ctx.addIssue({ code: 'custom', path: ['cases', i, 'name'], message: `duplicate case name '${c.name}'` });
      seen.add(c.name);
    });
  });
/** A validated suite. */
export type EvalSuite = z.output<typeof EvalSuiteSchema>;

/**
 * A zod error on a suite as one line: each issue as `case '<name>' (cases[i]) <field>: <message>` (or
 * `<field>: <message>` outside the cases); the first three, and how many more.
 */
function describeSuiteIssues(error: z.ZodError, raw: unknown): string {
  const cases = (raw as { cases?: unknown } | null)?.cases;
  const lines = error.issues.map((issue) => {
    const [head, index, ...rest] = issue.path;
    if (head === 'cases' && typeof index === 'number') {
      const name = Array.isArray(cases) ? (cases[index] as { name?: unknown } | null)?.name : undefined;
      const which = typeof name === 'string' && name ? `case '${name}' (cases[${index}])` : `cases[${index}]`;
      return rest.length ? `${which} ${rest.map(String).join('.')}: ${issue.message}` : `${which}: ${issue.message}`;
    }
    return `${issue.path.map(String).join('.') || '(top level)'}: ${issue.message}`;
  });
  const more = lines.length > 3 ? `; and ${lines.length - 3} more` : '';
  return lines.slice(0, 3).join('; ') + more;
}

/** Parses a suite already read as JSON; `file` names it in errors. */
export function parseSuite(raw: unknown, file: string): EvalSuite {
  const parsed = EvalSuiteSchema.safeParse(raw);
  if (!parsed.success) throw new SuiteError(`suite ${file}: ${describeSuiteIssues(parsed.error, raw)}`);
  return parsed.data;
}

/** Reads and validates a suite file. @throws SuiteError naming the file (and the case and field). */
export async function loadSuite(file: string): Promise<EvalSuite> {
  return parseSuite(await readJsonFile(file, (why) => new SuiteError(`suite ${file}: ${why}`)), file);
}

/**
 * Reads a JSON file (a suite, a baseline); an unreadable or unparsable one is the error `fail` makes of
 * why (`no such file`, `not JSON (…)` followed by `notJsonHint`).
 */
export async function readJsonFile(file: string, fail: (why: string) => Error, notJsonHint = ''): Promise<unknown> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw fail(err.code === 'ENOENT' ? 'no such file' : err.message);
  });
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw fail(`not JSON (${(err as Error).message.split('\n')[0]})${notJsonHint}`);
  }
}

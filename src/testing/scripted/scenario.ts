// Scenario scripts for the scripted Messages API server: the zod schema of a scenario file, the
// loader that reads every `*.json` file of a list of directories, and the default directory list
// (`./scenarios` of the working directory plus each entry of `KEEL_SCENARIOS_DIR`). A scenario is the fake model's whole
// behaviour, turn by turn: what it answers, how long it takes, which HTTP faults it injects first, and
// which tool results it expects to have been sent. A turn can also react: `{ "choices": [...] }` plays the
// first choice whose `when` matches the tool results the agent sent, so one script covers a person
// approving or rejecting a call. Parsing is strict inside turns so that a typo in a hand-written file
// (`"latency"` for `"latency_ms"`) fails loudly with the file name and the JSON path, instead of silently
// changing what a test exercises.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

/** A `text` content block the scripted model answers with. */
export const ScenarioTextBlockSchema = z.strictObject({
  type: z.literal('text'),
  text: z.string(),
});

/**
 * A `tool_use` content block the scripted model answers with. The file carries no `id`: the server
 * derives one from the scenario name, turn and position so every attempt sees the same id.
 */
export const ScenarioToolUseBlockSchema = z.strictObject({
  type: z.literal('tool_use'),
  name: z.string().min(1),
  input: z.record(z.string(), z.unknown()),
});

/** One content block of a scripted turn: `text` or `tool_use`. */
export const ScenarioContentBlockSchema = z.discriminatedUnion('type', [
  ScenarioTextBlockSchema,
  ScenarioToolUseBlockSchema,
]);

/** A content block of a scripted turn. */
export type ScenarioContentBlock = z.infer<typeof ScenarioContentBlockSchema>;

/**
 * An HTTP fault injected before a turn succeeds: the first `times` attempts of the turn (after the
 * attempts consumed by earlier entries of the same `faults` list) get `status`. `retry_after_ms`
 * (milliseconds) adds `retry-after` (seconds, rounded up) and `retry-after-ms` headers.
 */
export const ScenarioFaultSchema = z
  .strictObject({
    status: z.number().int().min(400).max(599),
    times: z.number().int().min(1),
    retry_after_ms: z.number().int().min(0).optional(),
    /**
     * Fail mid-stream instead, as the real API does once a stream has begun: a streamed request gets a 200
     * `text/event-stream`, this many content deltas (text or tool-input chunks; all of them when the
     * answer has fewer), then an `error` event whose type is the status's (`overloaded_error` for 529) and
     * the end. A request that is not streamed gets the plain `status` answer.
     */
    after_chunks: z.number().int().min(1).optional(),
  })
  .refine((f) => f.after_chunks === undefined || f.retry_after_ms === undefined, {
    message: 'retry_after_ms cannot go with after_chunks: a stream that has begun has sent its headers',
    path: ['retry_after_ms'],
  });

/** A scripted HTTP fault. */
export type ScenarioFault = z.infer<typeof ScenarioFaultSchema>;

/**
 * What one tool result of the request's last user message must look like, in `expect` and in a choice's
 * `when`: `tool` must name the tool whose `tool_use` (in the previous assistant message) the result
 * answers; `is_error` (absent in the block means `false`) must be equal if given; `contains` must be a
 * substring of the result text.
 */
export const ScenarioExpectedToolResultSchema = z.strictObject({
  tool: z.string().min(1).optional(),
  is_error: z.boolean().optional(),
  contains: z.string().optional(),
});

/** An expectation on one tool result. */
export type ScenarioExpectedToolResult = z.infer<typeof ScenarioExpectedToolResultSchema>;

/** One turn of the scripted model: its answer, plus the optional latency, faults and expectations. */
export const ScenarioTurnSchema = z.strictObject({
  /** The content blocks of the assistant message, in order. */
  content: z.array(ScenarioContentBlockSchema),
  /** The `stop_reason` of the response. */
  stop_reason: z.enum(['end_turn', 'tool_use', 'max_tokens', 'stop_sequence', 'pause_turn', 'refusal']),
  /** Token usage reported for the turn; estimated from the request and the answer when absent. */
  usage: z
    .strictObject({
      input_tokens: z.number().int().min(0),
      output_tokens: z.number().int().min(0),
      cache_creation_input_tokens: z.number().int().min(0).optional(),
      cache_read_input_tokens: z.number().int().min(0).optional(),
    })
    .optional(),
  /** Delay before the successful response is sent, in milliseconds. */
  latency_ms: z.number().int().min(0).optional(),
  /** When streamed, the pause before each content delta (text or tool-input chunk), in milliseconds (none). */
  stream_chunk_ms: z.number().int().min(0).optional(),
  /** Faults answered before the turn succeeds, applied in sequence. */
  faults: z.array(ScenarioFaultSchema).optional(),
  /** Checks on the tool results of the request's last user message; a mismatch is a 400. */
  expect: z
    .strictObject({
      tool_results: z.array(ScenarioExpectedToolResultSchema),
    })
    .optional(),
});

/** One turn of a scenario. */
export type ScenarioTurn = z.infer<typeof ScenarioTurnSchema>;

/**
 * One choice of a branching turn: an ordinary turn plus `when`, the tool results that select it (matched
 * like `expect.tool_results`: the same number of results, each entry against the result at its index). A
 * choice without `when` is the default and matches any request. `expect`, `faults`, `latency_ms` and
 * `usage` apply once the choice is played.
 */
export const ScenarioChoiceSchema = ScenarioTurnSchema.extend({
  /** The condition on the tool results of the request's last user message; absent for the default. */
  when: z
    .strictObject({
      tool_results: z.array(ScenarioExpectedToolResultSchema),
    })
    .optional(),
});

/** One choice of a branching turn. */
export type ScenarioChoice = z.infer<typeof ScenarioChoiceSchema>;

/**
 * A turn that reacts to what the agent sent: the first choice whose `when` matches is played. A default
 * (no `when`) must come last, since no choice after it could ever be played.
 */
export const ScenarioBranchingTurnSchema = z
  .strictObject({
    choices: z.array(ScenarioChoiceSchema).min(1),
  })
  .superRefine((turn, ctx) => {
    const firstDefault = turn.choices.findIndex((c) => c.when === undefined);
    if (firstDefault !== -1 && firstDefault < turn.choices.length - 1) {
      ctx.addIssue({
        code: 'custom',
        path: ['choices', firstDefault],
        message: `choice ${firstDefault} has no "when", so it matches every request and the choices after it could never be played: put the default last`,
      });
    }
  });

/** A branching turn of a scenario. */
export type ScenarioBranchingTurn = z.infer<typeof ScenarioBranchingTurnSchema>;

/**
 * One entry of `turns`: a branching turn when it has a `choices` key, else an ordinary turn. The key
 * picks the schema before parsing (instead of a `z.union`) so that a mistake is reported against the
 * schema the author meant, with its JSON path, not as "no member of the union matched".
 */
export const ScenarioTurnEntrySchema = z.unknown().transform((value, ctx): ScenarioTurn | ScenarioBranchingTurn => {
  const branching = typeof value === 'object' && value !== null && 'choices' in value;
  const parsed = (branching ? ScenarioBranchingTurnSchema : ScenarioTurnSchema).safeParse(value);
  if (parsed.success) return parsed.data;
  for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path, input: value });
  return z.NEVER;
});

/** One entry of `turns`: an ordinary turn or a branching one. */
export type ScenarioTurnEntry = z.infer<typeof ScenarioTurnEntrySchema>;

/** Whether a turn entry branches (has `choices`). */
export function isBranchingTurn(turn: ScenarioTurnEntry): turn is ScenarioBranchingTurn {
  return 'choices' in turn;
}

/**
 * A scenario file: the model name `scripted/<name>` selects it. Unknown top-level keys are ignored
 * (room for authors' notes); keys inside turns are checked strictly.
 */
export const ScenarioSchema = z.object({
  name: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'name must be letters, digits, ".", "_" or "-" (it becomes the model name scripted/<name>)'),
  description: z.string(),
  turns: z.array(ScenarioTurnEntrySchema).min(1),
  /**
   * Play Anthropic's prompt cache in the usage the server estimates (a turn's scripted `usage` always
   * wins): a request with `cache_control` breakpoints reports the prefix up to its last breakpoint as
   * `cache_read_input_tokens` where an earlier request of the same model cached it (the longest match at a
   * breakpoint or any message boundary before it, as the API looks back), the rest of that prefix as
   * `cache_creation_input_tokens`, and what follows as `input_tokens`. A breakpoint whose prefix is under
   * `min_tokens` (1024, the API's least) caches nothing, as the API ignores it. Off when absent, so the
   * estimates of scenarios written before it do not change.
   */
  prompt_cache: z.strictObject({ min_tokens: z.number().int().min(0).default(1024) }).optional(),
});

/** A scenario script, as parsed from a file or given in memory. */
export type Scenario = z.infer<typeof ScenarioSchema>;

/** Formats zod issues as `path: message` lines, the path in dotted form (`turns.1.faults.0.status`). */
function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)'}: ${issue.message}`)
    .join('; ');
}

/**
 * Parses one scenario file.
 *
 * @param file - path of a JSON scenario file.
 * @returns the validated scenario.
 * @throws Error naming the file and, for a schema violation, each issue's JSON path.
 */
export function parseScenarioFile(file: string): Scenario {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`scenario file ${file} is not valid JSON: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
  const parsed = ScenarioSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(`scenario file ${file} is invalid: ${formatIssues(parsed.error)}`, { cause: parsed.error });
  }
  return parsed.data;
}

/** Lists the `*.json` files of a directory, sorted; an absent directory has none. */
function listScenarioFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    // A directory that does not exist (yet) holds no scenarios; anything else (not a directory, no
    // permission) is a configuration mistake worth surfacing.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`cannot read scenario directory ${dir}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
  return names
    .filter((n) => n.endsWith('.json'))
    .sort()
    .map((n) => path.join(dir, n));
}

/**
 * Reads every `*.json` file in each directory (files in name order, directories in list order) and
 * returns the scenarios by name. When two files declare the same name, the later one wins, so a
 * directory from `KEEL_SCENARIOS_DIR` can override a bundled scenario. A directory that does not
 * exist contributes nothing.
 *
 * @param dirs - directories to read, e.g. {@link scenarioDirs}().
 * @throws Error naming the file and the zod issue path when a file is malformed.
 */
export function loadScenarios(dirs: string[]): Map<string, Scenario> {
  const scenarios = new Map<string, Scenario>();
  for (const dir of dirs) {
    for (const file of listScenarioFiles(dir)) {
      const scenario = parseScenarioFile(file);
      scenarios.set(scenario.name, scenario);
    }
  }
  return scenarios;
}

/**
 * The directories scenarios are read from: `scenarios/` in the working directory (a project's own
 * scripts), then each entry of `KEEL_SCENARIOS_DIR` (split on `path.delimiter`, empty entries ignored,
 * resolved against the working directory).
 *
 * @param env - environment to read `KEEL_SCENARIOS_DIR` from; defaults to `process.env`.
 */
export function scenarioDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const local = path.resolve('scenarios');
  const extra = (env['KEEL_SCENARIOS_DIR'] ?? '')
    .split(path.delimiter)
    .map((d) => d.trim())
    .filter((d) => d.length > 0)
    .map((d) => path.resolve(d));
  return [local, ...extra];
}

/** What one {@link ScenarioLoader.load} call found: the valid scenarios and the files that failed. */
export interface ScenarioLoadResult {
  /** Valid scenarios by name (in-memory extras included, winning over files). */
  scenarios: Map<string, Scenario>;
  /** One message per file that could not be loaded, naming the file and the issue. */
  errors: string[];
}

interface CachedFile {
  mtimeMs: number;
  size: number;
  result: { scenario: Scenario } | { error: string };
}

/**
 * Loads scenarios from directories on every call, re-parsing only files whose mtime or size changed,
 * so a file added or edited while a server runs is picked up without a restart. Unlike
 * {@link loadScenarios} it does not throw on a malformed file: it reports it, so one broken file does
 * not take down the scenarios that are fine. Used by the scripted server; not part of the public API.
 */
export class ScenarioLoader {
  private readonly cache = new Map<string, CachedFile>();

  /**
   * @param dirs - directories to read on each {@link load}.
   * @param extras - in-memory scenarios that win over files of the same name.
   */
  constructor(
    private readonly dirs: string[],
    private readonly extras: Scenario[] = [],
  ) {}

  /** Reads the directories (cheaply, using the cache) and returns the current scenarios. */
  load(): ScenarioLoadResult {
    const scenarios = new Map<string, Scenario>();
    const errors: string[] = [];
    const seen = new Set<string>();
    for (const dir of this.dirs) {
      let files: string[];
      try {
        files = listScenarioFiles(dir);
      } catch (err) {
        errors.push(err instanceof Error ? err.message : String(err));
        continue;
      }
      for (const file of files) {
        seen.add(file);
        const entry = this.loadFile(file);
        if (entry === undefined) continue;
        if ('scenario' in entry) scenarios.set(entry.scenario.name, entry.scenario);
        else errors.push(entry.error);
      }
    }
    for (const file of this.cache.keys()) if (!seen.has(file)) this.cache.delete(file);
    for (const scenario of this.extras) scenarios.set(scenario.name, scenario);
    return { scenarios, errors };
  }

  private loadFile(file: string): CachedFile['result'] | undefined {
    let stat;
    try {
      stat = statSync(file);
    } catch {
      return undefined; // removed between readdir and stat
    }
    const cached = this.cache.get(file);
    if (cached && cached.mtimeMs === stat.mtimeMs && cached.size === stat.size) return cached.result;
    let result: CachedFile['result'];
    try {
      result = { scenario: parseScenarioFile(file) };
    } catch (err) {
      result = { error: err instanceof Error ? err.message : String(err) };
    }
    this.cache.set(file, { mtimeMs: stat.mtimeMs, size: stat.size, result });
    return result;
  }
}

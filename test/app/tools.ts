/**
 * A small app outside `src/`, as a team would write one: its own tools and agent, importing only the
 * public sandbox-safe entry. `define_word` reads a built-in glossary; `post_note` posts a note to the
 * team's notice board (the URL in `NOTES_URL`), irreversibly, so a person approves each one. The board's
 * tools reach it through `ctx.fetch`, allowed only its host (`env:NOTES_URL`).
 */
import { z } from 'zod';
import { defineAgent, defineTool, ToolError } from 'keel/workflow';

const GLOSSARY: Record<string, string> = {
  durable: 'able to survive a crash without losing progress',
  idempotent: 'safe to apply more than once with the effect of once',
};

/** Looks a word up in the glossary. */
export const defineWord = defineTool({
  name: 'define_word',
  description: 'Look up the definition of a word in the team glossary. Read-only.',
  input: z.object({ word: z.string().min(1).max(50).describe('The word to define') }),
  risk: 'read',
  // The team's own glossary: curated, so reading it taints nothing.
  trustedOutput: true,
  run: async ({ word }) => {
    const definition = GLOSSARY[word.toLowerCase()];
    if (!definition) throw new ToolError(`'${word}' is not in the glossary (known: ${Object.keys(GLOSSARY).join(', ')})`);
    return { word, definition };
  },
});

/** Lists inventory items; large on purpose (a result bigger than what history should hold). */
export const listItems = defineTool({
  name: 'list_items',
  description: 'List the first `count` inventory items with their names and shelves. Read-only.',
  input: z.object({ count: z.number().int().min(1).max(10_000) }),
  risk: 'read',
  maxResultBytes: 512 * 1024,
  run: async ({ count }) => ({ items: Array.from({ length: count }, (_, i) => ({ name: `item-${i}`, shelf: `shelf-${i % 40}` })) }),
});

/** Searches the team wiki (beside the notice board); optional, with a quick breaker for the tests. */
export const searchWiki = defineTool({
  name: 'search_wiki',
  description: 'Search the team wiki. Read-only; the answer does not depend on it.',
  input: z.object({ q: z.string().min(1).max(200) }),
  risk: 'read',
  criticality: 'optional',
  breaker: { failures: 3, resetAfter: '8s' },
  allowedHosts: ['env:NOTES_URL'],
  run: async ({ q }, ctx) => {
    const url = ctx.env.NOTES_URL;
    if (!url) throw new ToolError('NOTES_URL is not set on the worker');
    const res = await ctx.fetch(`${url.replace(/\/notes$/, '/wiki')}?q=${encodeURIComponent(q)}`);
    if (!res.ok) throw new Error(`wiki answered ${res.status}`);
    return (await res.json()) as unknown;
  },
});

/** Pings the notice board; its downstream takes at most 4 calls a second, across the fleet. */
export const pingBoard = defineTool({
  name: 'ping_board',
  description: 'Check that the notice board is up. Read-only.',
  input: z.object({ n: z.number().int() }),
  risk: 'read',
  rateLimit: { perSecond: 4 },
  allowedHosts: ['env:NOTES_URL'],
  run: async ({ n }, ctx) => {
    const res = await ctx.fetch(`${ctx.env.NOTES_URL!.replace(/\/notes$/, '/ping')}?n=${n}`);
    return (await res.json()) as unknown;
  },
});

/** Posts a note to the notice board; cannot be taken back. */
export const postNote = defineTool({
  name: 'post_note',
  description: 'Post a note to the team notice board. IRREVERSIBLE: everyone sees it at once.',
  input: z.object({ text: z.string().min(1).max(2000) }),
  risk: 'irreversible',
  allowedHosts: ['env:NOTES_URL'],
  run: async (input, ctx) => {
    const url = ctx.env.NOTES_URL;
    if (!url) throw new ToolError('NOTES_URL is not set on the worker');
    // ctx.fetch adds the session's trace headers and the activity's abort signal.
    const res = await ctx.fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': ctx.idempotencyKey },
      body: JSON.stringify(input),
    });
    if (!res.ok) throw new Error(`notice board answered ${res.status}`);
    return (await res.json()) as unknown;
  },
});

/** The team's agent. */
export const notes = defineAgent({
  name: 'notes',
  description: 'Explains glossary words and posts notes for the team.',
  system: 'You help the team with its glossary and its notice board. Posting is irreversible: post only what the user asked for.',
  tools: [defineWord, listItems, searchWiki, postNote],
  maxIterations: 5,
  idleTimeout: '10m',
});

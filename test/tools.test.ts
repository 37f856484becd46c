/**
 * The tool contract: tier rules enforced at registration, JSON Schema as the Messages API expects it,
 * and idempotency keys that depend only on the workflow ID and the call.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { appFromModule } from '../src/app/registry.js';
import { defineTool, toModelTool, ToolDefinitionError } from '../src/tools/index.js';
import * as supportDesk from '../examples/support-desk/tools.js';
import { canonicalJson, idempotencyKey, sha256Hex } from '../src/workflows/keys.js';

const toolRegistry = appFromModule(supportDesk).tools;
const base = { description: 'x', input: z.object({ a: z.string() }), run: async () => 'ok' };

describe('defineTool', () => {
  it('gives each tier its policy', () => {
    expect(defineTool({ ...base, name: 'r', risk: 'read' }).policy).toMatchObject({ maxAttempts: 3, startToCloseTimeout: '5s', idempotency: 'none', approval: 'never' });
    const noUndo = { noCompensation: 'test tool' };
    expect(defineTool({ ...base, ...noUndo, name: 'w', risk: 'write' }).policy).toMatchObject({ maxAttempts: 1, idempotency: 'input-hash', approval: 'policy' });
    expect(defineTool({ ...base, ...noUndo, name: 'wk', risk: 'write', idempotentDownstream: true }).policy.maxAttempts).toBe(3);
    expect(defineTool({ ...base, name: 'i', risk: 'irreversible' }).policy).toMatchObject({ maxAttempts: 1, approval: 'always' });
    expect(defineTool({ ...base, name: 'p', risk: 'privileged' }).policy).toMatchObject({ maxAttempts: 1, approval: 'other-person' });
    expect(defineTool({ ...base, name: 'c', risk: 'read' }).criticality).toBe('critical');
  });

  it.each([
    [{ name: 'bad name!', risk: 'read' }, /tool 'bad name!': name must match/],
    [{ name: 'pay', risk: 'irreversible', maxAttempts: 2 }, /tool 'pay': an irreversible tool may make at most 1 attempt\(s\): it is never retried blindly/],
    [{ name: 'upd', risk: 'write', maxAttempts: 3, noCompensation: 'x' }, /tool 'upd': a write tool may make at most 1 attempt\(s\) unless its downstream honours idempotency keys/],
    [{ name: 'slow', risk: 'read', timeout: '5m' }, /tool 'slow': timeout 5m exceeds the read tier's ceiling of 30s/],
    [{ name: 'rk', risk: 'read', idempotency: 'per-call' }, /tool 'rk': a read tool has no side effect/],
    [{ name: 'odd', risk: 'dangerous' }, /tool 'odd': risk must be one of read, write, irreversible, privileged/],
  ])('rejects an unsafe definition: %o', (spec, message) => {
    expect(() => defineTool({ ...base, ...(spec as object) } as unknown as Parameters<typeof defineTool>[0])).toThrow(ToolDefinitionError);
    expect(() => defineTool({ ...base, ...(spec as object) } as unknown as Parameters<typeof defineTool>[0])).toThrow(message);
  });

  it('turns the zod input into the JSON Schema the Messages API takes (input side: defaults optional)', () => {
    const tool = toModelTool(toolRegistry.get('search_kb')!);
    expect(tool.input_schema).toMatchObject({
      type: 'object',
      properties: { query: { type: 'string', minLength: 2, description: 'What to search for' }, limit: { type: 'integer', default: 3 } },
      required: ['query'],
    });
    expect(tool.input_schema).not.toHaveProperty('$schema');
  });

  it('registers the example tools under their names, one per tier at least', () => {
    const tiers = new Set([...toolRegistry.values()].map((t) => t.risk));
    expect(tiers).toEqual(new Set(['read', 'write', 'irreversible', 'privileged']));
    expect(toolRegistry.get('issue_refund')!.policy.maxAttempts).toBe(1);
  });
});

describe('idempotency keys', () => {
  it('sha256Hex agrees with node:crypto, including multi-block and non-ASCII input', () => {
    for (const text of ['', 'abc', 'a'.repeat(55), 'a'.repeat(56), 'a'.repeat(1000), 'Grüße, 東京 🚀']) {
      expect(sha256Hex(text)).toBe(createHash('sha256').update(text, 'utf8').digest('hex'));
    }
  });

  it('is the same for the same input in any key order, and differs for another input or workflow', () => {
    const k = (wf: string, input: unknown) => idempotencyKey('input-hash', wf, 'send_email', input, 'toolu_1');
    expect(k('wf-1', { to: 'a@x', body: 'hi' })).toBe(k('wf-1', { body: 'hi', to: 'a@x' }));
    expect(k('wf-1', { to: 'a@x', body: 'hi' })).not.toBe(k('wf-1', { to: 'a@x', body: 'hello' }));
    expect(k('wf-2', { to: 'a@x', body: 'hi' })).not.toBe(k('wf-1', { to: 'a@x', body: 'hi' }));
    expect(k('wf-1', { to: 'a@x' })).toMatch(/^wf-1:send_email:[0-9a-f]{16}$/);
    expect(idempotencyKey('per-call', 'wf-1', 'create_ticket', {}, 'toolu_9')).toBe('wf-1:create_ticket:toolu_9');
    expect(canonicalJson({ b: [1, { d: 1, c: 2 }], a: null })).toBe('{"a":null,"b":[1,{"c":2,"d":1}]}');
  });
});

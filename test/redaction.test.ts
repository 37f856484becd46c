/**
 * One redactor, everywhere. Canaries planted in the prompt (a card number, an email, an API key), in a
 * tool's input (a field the tool declares sensitive) and in its result (a JWT, a phone number) appear in
 * plaintext nowhere: not in history as Temporal stores it (payloads encrypted; read with the codec they are
 * there), the worker's log, the audit trail, the search attributes, the spans, or the status query's answer.
 * The model is shown the result redacted (the tool asks for it). And the redactor's rules, one by one.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { defineTool, ToolDefinitionError } from '../src/workflow.js';
import { payloadCodec } from '../src/codec/index.js';
import { openStore } from '../src/store/index.js';
import { createTestEnv, type TestEnv } from '../src/testing/index.js';
import { redact, redactText } from '../src/workflows/redact.js';
import { decryptedText } from './support/decrypt.js';
import { startOtlpReceiver, type OtlpReceiver } from './support/otlp-receiver.js';
import { ROOT } from './support/paths.js';
import { until } from './support/processes.js';

const CANARIES = {
  card: '4111 1111 1111 1111',
  email: 'zed.canary@example.org',
  apiKey: 'sk-ant-api03-CANARYq7f3a9c2d8e1b4',
  memberCode: 'MC-canary-7731',
  jwt: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnktcmVzdWx0In0.c2lnbmF0dXJlLWNhbmFyeQ',
  phone: '+44 20 7946 0958',
};
const found = (text: string) => Object.entries(CANARIES).filter(([, v]) => text.includes(v) || text.includes(v.replace(/ /g, ''))).map(([k]) => k);

let env: TestEnv;
let receiver: OtlpReceiver;
beforeAll(async () => {
  receiver = await startOtlpReceiver();
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
  env = await createTestEnv({
    tools: path.join(ROOT, 'test', 'fixtures', 'secrets-tools.ts'),
    scenarios: [
      {
        name: 'secrets',
        description: 'Checks the member with the code the user gave, then answers without repeating anything.',
        turns: [
          { content: [{ type: 'tool_use', name: 'check_member', input: { member_code: CANARIES.memberCode, email: CANARIES.email } }], stop_reason: 'tool_use' },
          { content: [{ type: 'text', text: 'Your membership is active.' }], stop_reason: 'end_turn', expect: { tool_results: [{ contains: '[redacted token]' }] } },
        ],
      },
    ],
    temporalAddress: inject('temporalAddress'),
    env: { KEEL_CODEC_KEYS: `k1:${randomBytes(32).toString('base64')}`, KEEL_DATA_DIR: path.join(ROOT, '.keel', 'test', 'data', `redaction-${randomUUID().slice(0, 8)}`) },
  });
});
afterAll(async () => {
  await env?.close();
  await receiver?.close();
});

describe('secrets planted in a session', () => {
  it('appear in plaintext in no history, log line, audit row, search attribute, span or status answer', async () => {
    // The member code only reaches the tool's input (the model's call): free text has no shape to find it by.
    const prompt = `My card ${CANARIES.card}, email ${CANARIES.email}, key ${CANARIES.apiKey}: is my membership active?`;
    const { sessionId, handle } = await env.client.startSession({ prompt, user: { id: 'member-1' }, agent: 'desk', model: 'scripted/secrets' });
    const { result, status } = await env.withWorker(async () => ({ result: await handle.result(), status: await env.client.status(sessionId) }));
    expect(result.answer).toBe('Your membership is active.');

    const connection = await Connection.connect({ address: inject('temporalAddress') });
    try {
      const handleWithoutCodec = new Client({ connection }).workflow.getHandle(sessionId);
      expect(found(historyToJSON(await handleWithoutCodec.fetchHistory()))).toEqual([]);
      // Read raw: the memo (who started the session) is encrypted too, so a client without the codec cannot decode it.
      const described = await connection.workflowService.describeWorkflowExecution({ namespace: env.config.TEMPORAL_NAMESPACE, execution: { workflowId: sessionId } });
      expect(found(JSON.stringify(described.workflowExecutionInfo?.searchAttributes ?? {}))).toEqual([]);
      const memoEncoding = described.workflowExecutionInfo?.memo?.fields?.['keelUser']?.metadata?.['encoding'];
      expect(Buffer.from(memoEncoding ?? []).toString()).toBe('binary/encrypted');
    } finally {
      await connection.close();
    }
    // The positive control: decrypted, the prompt and the tool's input are all there.
    expect(found(decryptedText(await handle.fetchHistory(), payloadCodec(env.config)!))).toEqual(expect.arrayContaining(['card', 'email', 'apiKey', 'memberCode']));

    const log = readFileSync(env.logFile, 'utf8');
    expect(log).toContain(sessionId);
    expect(found(log)).toEqual([]);

    const store = await openStore(env.config);
    try {
      const rows = await store.auditTrail(sessionId);
      expect(rows.map((r) => r.kind)).toEqual(expect.arrayContaining(['run', 'tool_intent', 'tool_result']));
      expect(found(JSON.stringify(rows))).toEqual([]);
      expect(rows.find((r) => r.kind === 'tool_intent')!.data.args).toEqual({ member_code: '[redacted]', email: 'z***@example.org' });
    } finally {
      await store.close();
    }

    expect(found(JSON.stringify(status))).toEqual([]);
    const spans = await until(() => (receiver.spans.some((s) => s.name === 'RunActivity:check_member') ? receiver.spans : undefined), 'the spans');
    expect(found(JSON.stringify(spans.map((s) => s.raw)))).toEqual([]);
  });
});

describe('the redactor', () => {
  it('masks emails, Luhn-valid cards, tokens and phone numbers in text', () => {
    expect(redactText('mail ada@example.com now')).toBe('mail a***@example.com now');
    expect(redactText('card 4111 1111 1111 1111 ok')).toBe('card ****1111 ok');
    expect(redactText('card 5555-5555-5555-4444')).toBe('card ****4444');
    // Not a card: the checksum fails, so an order number or a timestamp stays.
    expect(redactText('order 1234567890123 at 1763683200000')).toBe('order 1234567890123 at 1763683200000');
    for (const token of ['sk-ant-api03-abcdefghijklmnop', 'sk_live_51Habcdefghijk', 'ghp_abcdefghijklmnopqrstuvwxyz0123456789', 'xoxb-1234567890-abcdef', 'AKIAIOSFODNN7EXAMPLE', CANARIES.jwt, 'Bearer abcdefghijklmnop.qrstuvwx']) {
      expect(redactText(`x ${token} y`), token).toBe('x [redacted token] y');
    }
    expect(redactText('call +44 20 7946 0958 today')).toBe('call ***58 today');
    expect(redactText('call (415) 555-0132')).toBe('call ***32');
    // Numbers that are not written as phone numbers stay: amounts, dates, ids.
    expect(redactText('45.00 USD on 2026-11-21, ticket 4411, ord_1002')).toBe('45.00 USD on 2026-11-21, ticket 4411, ord_1002');
  });

  it('masks secret-looking keys and declared fields anywhere in a value, and keeps errors readable', () => {
    expect(redact({ user: { api_key: 'x', Password: 'y', name: 'Ada', member_code: 'MC-1' }, list: ['ada@example.com'] }, { fields: ['member_code'] })).toEqual({
      user: { api_key: '[redacted]', Password: '[redacted]', name: 'Ada', member_code: '[redacted]' },
      list: ['a***@example.com'],
    });
    expect(redact(new Error('failed for ada@example.com'))).toMatchObject({ type: 'Error', message: 'failed for a***@example.com' });
    expect(redact('x'.repeat(10), { maxString: 4 })).toBe('xxxx…');
  });

  it('refuses a sensitive field the input does not have, naming it', () => {
    const spec = { name: 'lookup', description: 'x', input: z.object({ code: z.string() }), risk: 'read' as const, run: async () => 'ok' };
    expect(() => defineTool({ ...spec, sensitive: ['cde'] })).toThrow(ToolDefinitionError);
    expect(() => defineTool({ ...spec, sensitive: ['cde'] })).toThrow("tool 'lookup': sensitive names 'cde', which is not a field of its input (fields: code)");
  });
});

/**
 * The `keel` command line as a user's script drives it: a malformed call exits 2 with a one-line
 * reason; `keel run --json` prints one JSON document with the answer (exit 0) or the failure (exit 1);
 * `keel status` and `keel replay` report on a finished session. And `npm run demo`, which ends with an
 * answer whether its approvals are given or rejected, and refuses bad flags the same way.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DemoLedger } from '../examples/support-desk/services/ledger.js';
import { ROOT, startHarness, type Harness } from './support/harness.js';
import { runCommand, runKeel } from './support/processes.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness('cli');
});
afterAll(async () => {
  await h?.close();
});

const keel = (args: string[], env: Record<string, string> = {}) => runKeel(args, { ...h.env, ...env });

describe('bad usage exits 2 with a one-line reason', () => {
  const cases: Array<[string, string[], Record<string, string>, RegExp]> = [
    ['no command', [], {}, /^$/],
    ['an unknown command', ['frobnicate'], {}, /^keel: unknown command 'frobnicate'/],
    ['run without a prompt', ['run'], {}, /^keel: keel run needs a prompt/],
    ['an unknown option', ['run', '--colour', 'red', 'hi'], {}, /^keel: Unknown option '--colour'/],
    ['a bad number', ['run', '--max-iterations', 'lots', 'hi'], {}, /^keel: --max-iterations must be a whole number >= 1 \(got 'lots'\)/],
    ['status without a session', ['status'], {}, /^keel: keel status takes one session id/],
    ['replay with both an id and a file', ['replay', 'x', '--file', 'y.json'], {}, /^keel: keel replay takes one session id, --file <history.json>, or --running/],
    ['replay of a file that is not a history', ['replay', '--file', path.join(ROOT, 'package.json')], {}, /not a workflow history/],
    ['a worker without a tools module', ['worker'], { KEEL_TOOLS: '' }, /^keel: keel worker needs --tools <module>/],
    ['a tools module that does not exist', ['worker', '--tools', 'nope/tools.ts'], {}, /^keel: tools module nope\/tools\.ts: no such file/],
    ['chat with a session that does not exist', ['chat', 'session-nope'], {}, /^keel: no session 'session-nope'/],
    ['--chat with --detach', ['run', '--chat', '--detach', 'hi'], {}, /^keel: --chat and --detach do not go together/],
    ['a bad TEMPORAL_ADDRESS', ['status', 'x'], { TEMPORAL_ADDRESS: 'not an address' }, /^keel: TEMPORAL_ADDRESS: expected host:port/],
    ['half an mTLS pair', ['status', 'x'], { TEMPORAL_TLS_CLIENT_CERT_PATH: '/tmp/c.pem' }, /^keel: TEMPORAL_TLS_CLIENT_CERT_PATH: the client certificate and key go together/],
    ['a session that does not exist', ['status', 'session-nope'], {}, /^keel: no session 'session-nope' in namespace default/],
    ['an invalid session input', ['run', '--session-id', 'x', '--max-iterations', '500', 'hi'], {}, /^keel: maxIterations: Too big/],
  ];
  it.each(cases)('%s', async (_name, args, env, reason) => {
    const r = await keel(args, env);
    expect(r.code).toBe(2);
    const lines = r.stderr.trim() ? r.stderr.trim().split('\n') : [];
    expect(lines.length).toBeLessThanOrEqual(1);
    expect(lines[0] ?? '').toMatch(reason);
  });
});

describe('driving sessions', () => {
  it('keel run --json prints one JSON document with the answer; status and replay report on it', async () => {
    const run = await h.withWorker(() => keel(['run', '--json', '--agent', 'support', '--model', 'scripted/bad-input', '--user', 'u1', 'What is ord_1001?']));
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout) as { sessionId: string; status: string; answer: string; toolCalls: unknown[] };
    expect(doc).toMatchObject({ status: 'completed', answer: 'Order ord_1001 totals 129.00 USD.' });
    expect(doc.toolCalls).toHaveLength(3);
    // Progress went to stderr, as it happened.
    expect(run.stderr).toMatch(/\[turn 1\] {3}delete_everything REJECTED: Unknown tool/);

    const status = await h.withWorker(() => keel(['status', '--json', doc.sessionId]));
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ sessionId: doc.sessionId, workflowStatus: 'COMPLETED', state: 'completed', toolCalls: 3 });

    // With no worker to answer the query, status still reports the closed session from its history.
    const offline = await keel(['status', '--json', doc.sessionId]);
    expect(offline.code).toBe(0);
    expect(JSON.parse(offline.stdout)).toMatchObject({ workflowStatus: 'COMPLETED', answer: 'Order ord_1001 totals 129.00 USD.', toolCalls: 3 });

    const replay = await keel(['replay', '--json', '--tools', 'examples/support-desk/tools.ts', doc.sessionId], { KEEL_WORKFLOW_BUNDLE: '' });
    expect(replay.code).toBe(0);
    expect(JSON.parse(replay.stdout)).toMatchObject({ workflowId: doc.sessionId, deterministic: true });
  }, 60_000);

  it('keel run exits 2 when the worker refuses the session input (an agent it does not have)', async () => {
    const run = await h.withWorker(() => keel(['run', '--json', '--agent', 'nobody', '--model', 'scripted/bad-input', 'hello']));
    expect(run.code).toBe(2);
    expect(JSON.parse(run.stdout)).toMatchObject({ status: 'failed', error: "unknown agent 'nobody' (this worker's agents: support; omit it for the default agent)" });
  }, 60_000);

  it('keel run exits 1 when the session fails, with the reason', async () => {
    const run = await h.withWorker(() => keel(['run', '--json', '--model', 'scripted/rejected', 'hello']));
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout)).toMatchObject({ status: 'failed', error: expect.stringMatching(/model API 400 error/) });
  }, 60_000);
});

describe('npm run demo (the support-desk example)', () => {
  /** Runs the demo with `args`; it reuses the shared test server (TEMPORAL_ADDRESS) and starts its own scripted model, demo services and worker. */
  const demo = (args: string[], extraEnv: Record<string, string> = {}) => {
    const { ANTHROPIC_BASE_URL: _model, KEEL_DEMO_URL: _demo, ...env } = h.env;
    return runCommand(
      process.execPath,
      [path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), path.join(ROOT, 'examples', 'support-desk', 'demo.ts'), ...args],
      { ...env, ...extraEnv, ANTHROPIC_BASE_URL: undefined, KEEL_DEMO_URL: undefined },
    );
  };

  it('runs the demo session on the embedded defaults and ends with its answer (approvals given with --approve-as)', async () => {
    const { code, stdout, stderr } = await demo(['--json', '--approve-as', 'manager-1']);
    expect(code, stderr).toBe(0);
    const doc = JSON.parse(stdout) as { status: string; answer: string; agent: string; toolCalls: Array<{ name: string; approvalRequestId?: string }> };
    expect(doc.status).toBe('completed');
    expect(doc.agent).toBe('support');
    expect(doc.answer).toMatch(/^Done: I refunded the full 129.00 USD/);
    expect(doc.toolCalls.filter((t) => t.approvalRequestId).map((t) => t.name)).toEqual(['issue_refund', 'send_email']);
    expect(stderr).toMatch(/model: scripted Messages API at http:\/\/127\.0\.0\.1:\d+/);
    expect(stderr).toMatch(/issue_refund approval issue_refund-1: APPROVED/);
  }, 90_000);

  const rejections: Array<[string, string[], RegExp, string[], { refunds: number; emails: number }]> = [
    ['--reject-as: the refund is declined, so nothing is refunded or emailed', ['--reject-as', 'manager-1'], /^I did not refund order ord_1001: the person reviewing the refund declined it/, ['issue_refund'], { refunds: 0, emails: 0 }],
    [
      '--approve-as with --reject send_email: refunded, but no confirmation email',
      ['--approve-as', 'manager-1', '--reject', 'send_email'],
      /^I refunded the full 129.00 USD .* but the confirmation email was not sent because a person declined it/,
      ['issue_refund', 'send_email'],
      { refunds: 1, emails: 0 },
    ],
  ];
  it.each(rejections)('ends with an answer when a person rejects: %s', async (_name, args, answer, decided, effects) => {
    // A ledger of its own (the demo keeps it in KEEL_DATA_DIR), so what this run did is all it holds.
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'keel-demo-reject-'));
    try {
      const { code, stdout, stderr } = await demo(['--json', ...args], { KEEL_DATA_DIR: dataDir });
      expect(code, stderr).toBe(0);
      const doc = JSON.parse(stdout) as { status: string; answer: string; toolCalls: Array<{ name: string; outcome: string; approvalRequestId?: string }> };
      expect(doc.status).toBe('completed');
      expect(doc.answer).toMatch(answer);
      expect(doc.toolCalls.filter((t) => t.approvalRequestId).map((t) => t.name)).toEqual(decided);
      expect(doc.toolCalls.find((t) => t.name === decided.at(-1))?.outcome).toBe('rejected');
      expect(stderr).toMatch(new RegExp(`${decided.at(-1)} approval ${decided.at(-1)}-1: REJECTED`));
      const ledger = new DemoLedger(path.join(dataDir, 'demo-ledger.sqlite'));
      try {
        const { refunds, emails } = ledger.snapshot();
        expect({ refunds: refunds.length, emails: emails.length }).toEqual(effects);
      } finally {
        ledger.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 90_000);

  const badFlags: Array<[string, string[], RegExp]> = [
    ['--approve-as with --reject-as', ['--approve-as', 'a', '--reject-as', 'b'], /^demo: --approve-as and --reject-as do not go together/],
    ['--reject without --approve-as', ['--reject', 'send_email'], /^demo: --reject send_email needs --approve-as <id>/],
    ['--reject of a tool the agent does not have', ['--approve-as', 'a', '--reject', 'send-email'], /^demo: --reject: the support agent has no tool 'send-email' \(its tools: .*send_email/],
  ];
  it.each(badFlags)('exits 2 with a one-line reason for %s', async (_name, args, reason) => {
    const { code, stdout, stderr } = await demo(args);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr.trim().split('\n')).toEqual([expect.stringMatching(reason)]);
  });
});

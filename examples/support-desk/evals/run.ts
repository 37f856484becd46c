/**
 * `npm run eval`: the support-desk eval suite (`support.json`) on the embedded defaults, the way CI runs
 * it. Starts the example's downstream services on a fresh ledger (so the suite's refunds and credits start
 * from the seed data every time), Keel's embedded stack with this example's tools module on a task queue of
 * its own (the scripted model, or Claude with ANTHROPIC_API_KEY), then runs `keel eval` against it and exits
 * with its code. Arguments go to `keel eval` (but `--no-baseline`, which is this script's).
 *
 *   npm run eval                                  scripted model, compared with support.baseline.json
 *   npm run -s eval -- --no-baseline --json > examples/support-desk/evals/support.baseline.json   a new baseline
 *   ANTHROPIC_API_KEY=… npm run eval -- --model claude-sonnet-4-5   Claude (no baseline: it is the scripted model's)
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedStack } from 'keel';
import { startDemoServices } from '../services/index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TOOLS = path.join(HERE, '..', 'tools.ts');
const SUITE = path.join(HERE, 'support.json');
const BASELINE = path.join(HERE, 'support.baseline.json');
/** The `keel` command of the installed package. */
const KEEL_BIN = path.join(path.dirname(createRequire(import.meta.url).resolve('keel/package.json')), 'bin', 'keel.js');

async function main(argv: string[]): Promise<number> {
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'keel-eval-'));
  const services = await startDemoServices({ port: 0, host: '127.0.0.1', dbFile: path.join(scratch, 'ledger.sqlite') });
  try {
    const stack = await startEmbeddedStack({
      tools: TOOLS,
      env: { ...process.env, KEEL_DEMO_URL: services.url, KEEL_TASK_QUEUE: `keel-eval-${randomUUID().slice(0, 8)}` },
      scenarioDirs: [path.join(HERE, '..', 'scenarios')],
      log,
    });
    try {
      const args = argv.filter((a) => a !== '--no-baseline');
      // The committed baseline is the scripted model's: compare with it only when the scripted model answers.
      if (!stack.modelUrl && !args.includes('--model')) args.push('--model', process.env.KEEL_MODEL ?? 'claude-sonnet-4-5');
      const compare = stack.modelUrl && !argv.includes('--no-baseline') && !args.includes('--model') && !args.includes('--baseline');
      if (compare) args.push('--baseline', path.relative(process.cwd(), BASELINE));
      const child = spawn(process.execPath, [KEEL_BIN, 'eval', path.relative(process.cwd(), SUITE), ...args], { env: { ...process.env, ...stack.env }, stdio: 'inherit' });
      return await new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
    } finally {
      await stack.stop();
    }
  } finally {
    await services.close();
    await rm(scratch, { recursive: true, force: true });
  }
}

process.exitCode = await main(process.argv.slice(2));

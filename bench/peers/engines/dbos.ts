/**
 * DBOS Transact (TypeScript) on the machine's PostgreSQL: the shared agent loop as a DBOS workflow in
 * this process, each model call and each tool call a step (`DBOS.runStep`), whose output DBOS writes to
 * its system database before the workflow goes on. The system database is created for this run (a name
 * of its own on the server of `KEEL_BENCH_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/`)
 * and dropped at the end.
 */
import { randomUUID } from 'node:crypto';
import { DBOS } from '@dbos-inc/dbos-sdk';
import pg from 'pg';
import { agentLoop, type LoopInput } from '../loop.js';
import { checkSession, PROMPT, type StepIO } from '../workload.js';
import { pkgVersion } from '../versions.js';
import type { Engine, StartEngine } from './types.js';

/** The PostgreSQL server DBOS uses: `KEEL_BENCH_POSTGRES_URL` (its database part is replaced by one for this run). */
const SERVER_URL = process.env.KEEL_BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** The settings of the server that decide when a commit is durable, as `name=value`. */
async function pgSettings(url: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string; setting: string }>(
      "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', 'wal_sync_method', 'full_page_writes') ORDER BY name",
    );
    const version = (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? '?';
    return [`PostgreSQL ${version}`, ...rows.map((r) => `${r.name}=${r.setting}`)];
  } finally {
    await client.end();
  }
}

/** Drops the run's database (after DBOS has closed its pool). */
async function dropDatabase(serverUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

let registered: ((input: LoopInput) => Promise<{ turns: number; toolCalls: number; stopReason: string }>) | undefined;

/** The DBOS workflow over the step I/O; DBOS wants workflows registered once, before `launch`. */
function agentSession(io: StepIO) {
  registered ??= DBOS.registerWorkflow(
    async (input: LoopInput) =>
      agentLoop(
        {
          callModel: (messages) => DBOS.runStep(() => io.callModel(DBOS.workflowID ?? '', messages), { name: 'callModel' }),
          callTool: (use) => DBOS.runStep(() => io.callTool(use), { name: 'callTool' }),
        },
        input,
      ),
    { name: 'agentSession' },
  );
  return registered;
}

export const startDbos: StartEngine = async ({ io, steps }) => {
  const settings = await pgSettings(SERVER_URL);
  const dbName = `keel_bench_dbos_${randomUUID().slice(0, 8)}`;
  const url = new URL(SERVER_URL);
  url.pathname = `/${dbName}`;
  const wf = agentSession(io);
  DBOS.setConfig({ name: 'keel-bench-peers', systemDatabaseUrl: url.toString(), logLevel: 'warn' });
  // DBOS creates the system database and its tables on launch.
  await DBOS.launch();
  const engine: Engine = {
    name: 'dbos',
    version: `@dbos-inc/dbos-sdk ${pkgVersion('@dbos-inc/dbos-sdk')}, ${settings[0]}`,
    durability: [
      `system database on the machine's PostgreSQL (${settings.slice(1).join(', ')}), pool and DBOS defaults`,
      'each step = 2 steps (runStep); each output is committed to the system database before the workflow goes on; workflow status written at start and end',
    ],
    async runSession(sessionId) {
      const handle = await DBOS.startWorkflow(wf, { workflowID: sessionId })({ prompt: PROMPT, maxTurns: steps + 1 });
      checkSession('dbos', sessionId, steps, await handle.getResult());
    },
    async close() {
      await DBOS.shutdown();
      await dropDatabase(SERVER_URL, dbName);
    },
  };
  return engine;
};

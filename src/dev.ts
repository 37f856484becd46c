/**
 * The embedded stack behind `keel dev` (and an example's demo): a Temporal dev server (reused when one
 * answers at TEMPORAL_ADDRESS, else started in the background on a SQLite file under KEEL_DATA_DIR so it
 * outlives the command and keeps its Web UI up), the scripted Messages API server when no
 * ANTHROPIC_API_KEY or ANTHROPIC_BASE_URL is set, and a worker in-process running the given tools module.
 * With codec keys (KEEL_CODEC_KEYS) it also runs `keel codec-server` in-process, beside the Web UI (UI port
 * + 1, so 8234 by default), and starts the dev server's Web UI pointing at it, so the UI shows encrypted
 * sessions decoded.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { codecToken, payloadCodec, startCodecServer, type CodecServer } from './codec/index.js';
import { dataDir, loadConfig, type KeelConfig } from './config.js';
import { ensureTemporal } from './devserver/index.js';
import { createLogger } from './logging.js';
import { scenarioDirs, startScriptedModel, type ScriptedModelServer } from './testing/scripted/index.js';
import { createKeelWorker, type KeelWorker } from './worker.js';

/** A running embedded stack. */
export interface EmbeddedStack {
  /** Configuration with the embedded endpoints filled in. */
  config: KeelConfig;
  /** The environment a tool or another process should use to reach the same stack. */
  env: Record<string, string>;
  temporalAddress: string;
  /** The Web UI, when this stack started the server (a reused server's UI is wherever it is). */
  uiUrl?: string;
  /** Set when the scripted model runs in-process. */
  modelUrl?: string;
  /** Set when codec keys are configured: the in-process codec server the Web UI decodes through. */
  codecUrl?: string;
  worker: KeelWorker;
  /** Where the worker's structured logs go. */
  workerLog: string;
  /** Stops the worker and the in-process servers; the Temporal server keeps running in the background. */
  stop(): Promise<void>;
}

/** Options of `startEmbeddedStack`. */
export interface EmbeddedStackOptions {
  /** The tools module the worker runs. */
  tools: string;
  /** Environment (process.env); also what the tools see, with the stack's endpoints added. */
  env?: NodeJS.ProcessEnv;
  /** Directories of scenarios for the scripted model (`./scenarios`, KEEL_SCENARIOS_DIR and `scenarios/` beside the tools module). */
  scenarioDirs?: string[];
  /** Progress lines. */
  log?: (line: string) => void;
}

/** Starts whatever of the stack is not already reachable. */
export async function startEmbeddedStack(opts: EmbeddedStackOptions): Promise<EmbeddedStack> {
  const env = { ...(opts.env ?? process.env) };
  const log = opts.log ?? (() => {});
  const base = loadConfig(env);
  const dir = dataDir(base);

  const codec = await startDevCodecServer(base, log);
  let temporal: Awaited<ReturnType<typeof ensureTemporal>>;
  try {
    temporal = await ensureTemporal({
      address: base.TEMPORAL_ADDRESS,
      namespace: base.TEMPORAL_NAMESPACE,
      dataDir: dir,
      env,
      detached: true,
      log,
      ...(codec ? { uiCodecEndpoint: codec.webUiEndpoint } : {}),
    });
  } catch (err) {
    await codec?.close();
    throw err;
  }
  if (codec && temporal.reused) {
    log(
      `codec: the Web UI of the reused server at ${base.TEMPORAL_ADDRESS} decodes through ${codec.url} only if keel dev started it with encryption on; ` +
        "otherwise `keel stop` and run keel dev again (or give the UI's data encoder settings the endpoint `keel codec-server --web-ui-endpoint` prints)",
    );
  }
  const uiUrl = temporal.started?.uiUrl;
  // The server outlives this command (its Web UI stays up); `keel stop` finds it by this file.
  if (temporal.started?.pid) await writeFile(path.join(dir, 'temporal.pid'), `${temporal.started.pid}\n`);
  log(temporal.reused ? `temporal: using ${temporal.address}` : `temporal: started at ${temporal.address}${uiUrl ? `, Web UI ${uiUrl}` : ''}`);

  let model: ScriptedModelServer | undefined;
  try {
    if (!base.ANTHROPIC_API_KEY && !base.ANTHROPIC_BASE_URL) {
      // Scenarios: ./scenarios, KEEL_SCENARIOS_DIR, and the `scenarios/` folder beside the tools module.
      const dirs = opts.scenarioDirs ?? [...scenarioDirs(env), path.join(path.dirname(path.resolve(opts.tools)), 'scenarios')];
      model = await startScriptedModel({ scenarioDirs: dirs });
      env.ANTHROPIC_BASE_URL = model.url;
      log(`model: scripted Messages API at ${model.url} (set ANTHROPIC_API_KEY to use Claude)`);
    }
    env.TEMPORAL_ADDRESS = temporal.address;
    const config = loadConfig(env);
    const workerLog = config.KEEL_LOG_FILE ?? path.join(dir, 'worker.log');
    const worker = await createKeelWorker({
      tools: opts.tools,
      config,
      toolEnv: env,
      logger: createLogger({ level: config.KEEL_LOG_LEVEL, file: workerLog }),
    });
    const running = worker.worker.run();
    log(
      `worker: polling task queue ${config.KEEL_TASK_QUEUE} with ${worker.app.tools.size} tools from ${opts.tools}` +
        `${worker.app.agents.size ? ` and agents ${[...worker.app.agents.keys()].join(', ')}` : ''} (logs: ${path.relative(process.cwd(), workerLog)})`,
    );
    return {
      config,
      env: Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined)),
      temporalAddress: temporal.address,
      ...(uiUrl ? { uiUrl } : {}),
      ...(model ? { modelUrl: model.url } : {}),
      ...(codec ? { codecUrl: codec.url } : {}),
      worker,
      workerLog,
      async stop() {
        worker.worker.shutdown();
        await running.catch(() => undefined);
        await worker.close();
        await model?.close();
        await codec?.close();
      },
    };
  } catch (err) {
    await model?.close();
    await codec?.close();
    throw err;
  }
}

/**
 * With codec keys: the codec server for the dev server's Web UI, on 127.0.0.1 at the UI's port + 1 (8234
 * by default), letting in the UI's origin under both loopback names. Its token is KEEL_CODEC_TOKEN, else
 * one kept in KEEL_DATA_DIR, so the endpoint a background dev server was started with survives restarts.
 */
async function startDevCodecServer(config: KeelConfig, log: (line: string) => void): Promise<CodecServer | undefined> {
  const codec = payloadCodec(config);
  if (!codec) return undefined;
  const [host = 'localhost', port = '7233'] = config.TEMPORAL_ADDRESS.split(/:(?=\d+$)/);
  const uiPort = Number(port) + 1000;
  const origins = [...new Set([`http://localhost:${uiPort}`, `http://127.0.0.1:${uiPort}`, `http://${host}:${uiPort}`])];
  const { token, source } = await codecToken(config, { create: true });
  const server = await startCodecServer({ codec, token, origins, port: uiPort + 1 });
  log(
    `codec: payloads encrypted with key '${codec.activeKeyId}' (decrypting ${codec.keyIds.join(', ')}); codec server for the Web UI at ${server.url}` +
      ` (bearer token: ${source === 'KEEL_CODEC_TOKEN' ? 'KEEL_CODEC_TOKEN' : `saved in ${path.relative(process.cwd(), source)}`})`,
  );
  return server;
}

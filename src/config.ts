/**
 * Keel's configuration, read from the environment once at start-up and validated with zod. A bad value
 * is a `ConfigError` naming the variable and what was wrong (never echoing a secret), not a crash deep
 * inside. Also builds the Temporal connection options (plain, mTLS or API key) from it.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { describeIssues } from './workflows/types.js';

const optionalString = z.string().trim().min(1).optional().catch(undefined);
const boolish = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

/** The environment variables Keel reads, with defaults. */
export const KeelEnvSchema = z.object({
  TEMPORAL_ADDRESS: z.string().regex(/^[^\s:/]+:\d{1,5}$/, 'expected host:port, e.g. localhost:7233').default('localhost:7233'),
  TEMPORAL_NAMESPACE: z.string().regex(/^[\w.-]{1,255}$/, 'expected a namespace name').default('default'),
  KEEL_TASK_QUEUE: z.string().regex(/^[\w.-]{1,255}$/, 'expected a task queue name').default('keel-agent'),
  /** Temporal Cloud API key; implies TLS. */
  TEMPORAL_API_KEY: z.string().min(1).optional(),
  /** Force TLS on or off (on when a cert or API key is given). */
  TEMPORAL_TLS: boolish.optional(),
  /** mTLS client certificate and key (PEM file paths); both or neither. */
  TEMPORAL_TLS_CERT: z.string().min(1).optional(),
  TEMPORAL_TLS_KEY: z.string().min(1).optional(),
  /** CA certificate (PEM file path) for a private CA. */
  TEMPORAL_TLS_CA: z.string().min(1).optional(),
  TEMPORAL_TLS_SERVER_NAME: z.string().min(1).optional(),
  ANTHROPIC_API_KEY: z.string().min(1).optional(),
  ANTHROPIC_BASE_URL: z.url({ message: 'expected a URL, e.g. http://127.0.0.1:4000' }).optional(),
  KEEL_MODEL: z.string().min(1).max(200).optional(),
  KEEL_AUDIT_URL: z.string().min(1).optional(),
  KEEL_DATA_DIR: z.string().min(1).default('.keel'),
  KEEL_DEMO_URL: z.url({ message: 'expected a URL' }).optional(),
  KEEL_LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  KEEL_LOG_FILE: optionalString,
  /**
   * Workflows a worker keeps cached between tasks (the SDK's default, derived from the heap size). A
   * parked session costs no CPU; cached, it holds ~1–1.6 MB of worker memory, so this bounds what parked
   * sessions can cost. Evicted sessions replay their history on the next event (bench/approvals).
   */
  KEEL_MAX_CACHED_WORKFLOWS: z.coerce.number().int().min(0).max(100_000).optional(),
  /** A prebuilt workflow bundle (from `bundleWorkflowCode`) for the worker to load instead of bundling at start. */
  KEEL_WORKFLOW_BUNDLE: optionalString,
});
/** Validated configuration. */
export type KeelConfig = z.infer<typeof KeelEnvSchema>;

/** A configuration value is wrong; the message names the variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Reads and validates Keel's environment. Empty strings count as unset. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): KeelConfig {
  const present = Object.fromEntries(
    Object.keys(KeelEnvSchema.shape).flatMap((k) => (env[k] !== undefined && env[k] !== '' ? [[k, env[k]]] : [])),
  );
  const parsed = KeelEnvSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(
      describeIssues(parsed.error, ''),
    );
  }
  const c = parsed.data;
  if (!!c.TEMPORAL_TLS_CERT !== !!c.TEMPORAL_TLS_KEY) {
    throw new ConfigError('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together: set both for mTLS, or neither');
  }
  return c;
}

/** Options for `Connection.connect` / `NativeConnection.connect`. */
export interface TemporalConnectionOptions {
  address: string;
  apiKey?: string;
  tls?:
    | boolean
    | {
        clientCertPair?: { crt: Buffer; key: Buffer };
        serverRootCACertificate?: Buffer;
        serverNameOverride?: string;
      };
}

/** Builds Temporal connection options, reading certificate files (errors name the variable and path). */
export function temporalConnectionOptions(c: KeelConfig): TemporalConnectionOptions {
  const read = (key: 'TEMPORAL_TLS_CERT' | 'TEMPORAL_TLS_KEY' | 'TEMPORAL_TLS_CA'): Buffer | undefined => {
    const file = c[key];
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(`${key}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  };
  const crt = read('TEMPORAL_TLS_CERT');
  const key = read('TEMPORAL_TLS_KEY');
  const ca = read('TEMPORAL_TLS_CA');
  const wantTls = c.TEMPORAL_TLS ?? Boolean(crt || ca || c.TEMPORAL_API_KEY);
  if (!wantTls) {
    if (c.TEMPORAL_API_KEY) throw new ConfigError('TEMPORAL_TLS: an API key is only sent over TLS; unset TEMPORAL_TLS=false');
    return { address: c.TEMPORAL_ADDRESS };
  }
  return {
    address: c.TEMPORAL_ADDRESS,
    ...(c.TEMPORAL_API_KEY ? { apiKey: c.TEMPORAL_API_KEY } : {}),
    tls: {
      ...(crt && key ? { clientCertPair: { crt, key } } : {}),
      ...(ca ? { serverRootCACertificate: ca } : {}),
      ...(c.TEMPORAL_TLS_SERVER_NAME ? { serverNameOverride: c.TEMPORAL_TLS_SERVER_NAME } : {}),
    },
  };
}

/** The model endpoint a worker uses, and the default model name for sessions. */
export interface ModelEndpoint {
  apiKey: string;
  baseURL?: string;
  defaultModel: string;
  /** `anthropic` when a real API key is set; `scripted` when only a base URL is (Keel's scripted server). */
  kind: 'anthropic' | 'scripted';
}

/** Default scenario of the embedded scripted model. */
export const DEFAULT_SCRIPTED_MODEL = 'scripted/refund-demo';
/** Default Claude model when ANTHROPIC_API_KEY is set. */
export const DEFAULT_CLAUDE_MODEL = 'claude-sonnet-4-5';

/** Decides which model endpoint the worker talks to. */
export function modelEndpoint(c: KeelConfig): ModelEndpoint {
  if (c.ANTHROPIC_API_KEY) {
    return {
      apiKey: c.ANTHROPIC_API_KEY,
      ...(c.ANTHROPIC_BASE_URL ? { baseURL: c.ANTHROPIC_BASE_URL } : {}),
      defaultModel: defaultModel(c),
      kind: 'anthropic',
    };
  }
  if (c.ANTHROPIC_BASE_URL) {
    return { apiKey: 'scripted', baseURL: c.ANTHROPIC_BASE_URL, defaultModel: defaultModel(c), kind: 'scripted' };
  }
  throw new ConfigError(
    'ANTHROPIC_API_KEY: not set, and no ANTHROPIC_BASE_URL either. Set ANTHROPIC_API_KEY for Claude, or run `keel dev`, which starts the scripted model',
  );
}

/**
 * The model a new session names when the caller gives none: KEEL_MODEL, else Claude when an API key is
 * set, else the scripted demo scenario (what `keel dev` serves). Only the worker needs the endpoint.
 */
export function defaultModel(c: KeelConfig): string {
  return c.KEEL_MODEL ?? (c.ANTHROPIC_API_KEY ? DEFAULT_CLAUDE_MODEL : DEFAULT_SCRIPTED_MODEL);
}

/** The data directory, resolved against the working directory. */
export function dataDir(c: KeelConfig): string {
  return path.resolve(c.KEEL_DATA_DIR);
}

/**
 * Keel's configuration, read from the environment once at start-up and validated with zod. A bad value
 * is a `ConfigError` naming the variable and what was wrong (never echoing a secret), not a crash deep
 * inside. The Temporal connection is a Temporal client profile, resolved by Temporal's own
 * `@temporalio/envconfig`: a profile from the config file the `temporal` CLI uses (TEMPORAL_CONFIG_FILE,
 * TEMPORAL_PROFILE), with the standard TEMPORAL_* variables over it, so a CLI profile works for Keel too.
 * Keel adds its checks at the edge: formats, an mTLS pair that is whole, and no API key over plaintext.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import type { TLSConfig } from '@temporalio/client';
import {
  loadClientConfigProfile,
  toClientOptions,
  type ClientConfigProfile,
  type ClientConfigTLS,
  type ConfigDataSource,
} from '@temporalio/envconfig';
import { z } from 'zod';
import { CodecKeyError, parseCodecKeys, type CodecKeyring } from './codec/keys.js';
import { tracingSettings } from './telemetry/settings.js';
import { describeIssues } from './workflows/types.js';

const optionalString = z.string().trim().min(1).optional().catch(undefined);
const boolish = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
const hostPort = z.string().regex(/^[^\s:/]+:\d{1,5}$/, 'expected host:port, e.g. localhost:7233');
const namespaceName = z.string().regex(/^[\w.-]{1,255}$/, 'expected a namespace name');

/**
 * Where the worker serves Prometheus `/metrics`: an IP address and a port, the form Temporal core's exporter
 * binds (it takes no host names: `localhost:9464` is refused rather than failing later inside the runtime).
 */
export const MetricsAddressSchema = z.string().refine(
  (v) => {
    const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
    const port = Number(m?.[3]);
    return m !== null && isIP(m[1] ?? m[2] ?? '') === (m[1] ? 6 : 4) && port >= 1 && port <= 65535;
  },
  { message: 'expected an IP address and a port to listen on, e.g. 0.0.0.0:9464, 127.0.0.1:9464 or [::]:9464 (not a host name)' },
);

/**
 * The environment variables Keel reads, with defaults. The TEMPORAL_* ones are Temporal's standard client
 * variables (the `temporal` CLI reads the same): each overrides the same setting of the selected profile.
 * `TEMPORAL_GRPC_META_<NAME>` variables (gRPC headers) are read too, by envconfig, as a family.
 */
export const KeelEnvSchema = z.object({
  /** Temporal client config file (TOML); default `temporalio/temporal.toml` in the user config directory. */
  TEMPORAL_CONFIG_FILE: z.string().min(1).optional(),
  /** Profile to use from that file; default `default` (which may be absent: then the variables alone). */
  TEMPORAL_PROFILE: z.string().min(1).optional(),
  /** Frontend `host:port`; default the profile's address, else `localhost:7233`. */
  TEMPORAL_ADDRESS: hostPort.default('localhost:7233'),
  /** Namespace; default the profile's namespace, else `default`. */
  TEMPORAL_NAMESPACE: namespaceName.default('default'),
  KEEL_TASK_QUEUE: z.string().regex(/^[\w.-]{1,255}$/, 'expected a task queue name').default('keel-agent'),
  /** Temporal Cloud API key; turns TLS on unless TLS is configured explicitly (and refused without TLS). */
  TEMPORAL_API_KEY: z.string().min(1).optional(),
  /** Force TLS on or off (on by default when any TLS setting or an API key is given). */
  TEMPORAL_TLS: boolish.optional(),
  /** mTLS client certificate, as a PEM file path or the PEM itself; with the key, both or neither. */
  TEMPORAL_TLS_CLIENT_CERT_PATH: z.string().min(1).optional(),
  TEMPORAL_TLS_CLIENT_CERT_DATA: z.string().min(1).optional(),
  /** mTLS client key, as a PEM file path or the PEM itself. */
  TEMPORAL_TLS_CLIENT_KEY_PATH: z.string().min(1).optional(),
  TEMPORAL_TLS_CLIENT_KEY_DATA: z.string().min(1).optional(),
  /** CA certificate for a private CA, as a PEM file path or the PEM itself. */
  TEMPORAL_TLS_SERVER_CA_CERT_PATH: z.string().min(1).optional(),
  TEMPORAL_TLS_SERVER_CA_CERT_DATA: z.string().min(1).optional(),
  /** Server name to verify the server's certificate against (SNI override). */
  TEMPORAL_TLS_SERVER_NAME: z.string().min(1).optional(),
  ANTHROPIC_API_KEY: z.string().min(1).optional(),
  ANTHROPIC_BASE_URL: z.url({ message: 'expected a URL, e.g. http://127.0.0.1:4000' }).optional(),
  KEEL_MODEL: z.string().min(1).max(200).optional(),
  KEEL_AUDIT_URL: z.string().min(1).optional(),
  KEEL_DATA_DIR: z.string().min(1).default('.keel'),
  KEEL_LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  KEEL_LOG_FILE: optionalString,
  /**
   * Workflows a worker keeps cached between tasks (the SDK's default, derived from the heap size). A
   * parked session costs no CPU; cached, it holds ~1–1.6 MB of worker memory, so this bounds what parked
   * sessions can cost. Evicted sessions replay their history on the next event (bench/approvals).
   */
  KEEL_MAX_CACHED_WORKFLOWS: z.coerce.number().int().min(0).max(100_000).optional(),
  /** The tools module `keel worker`, `keel dev` and `keel replay` use when `--tools` is not given. */
  KEEL_TOOLS: optionalString,
  /** A prebuilt workflow bundle (from `bundleApp`) for the worker to load instead of bundling at start. */
  KEEL_WORKFLOW_BUNDLE: optionalString,
  /**
   * Payload encryption keys, `id:base64key` entries (32-byte AES-256 keys) separated by commas: the first
   * encrypts, all decrypt (rotation). Unset (and no KEEL_CODEC_KEYS_FILE): payloads are not encrypted.
   */
  KEEL_CODEC_KEYS: z.string().min(1).optional(),
  /** A file holding the same entries (commas or lines; `#` comments), instead of KEEL_CODEC_KEYS. */
  KEEL_CODEC_KEYS_FILE: z.string().min(1).optional(),
  /** The bearer token `keel codec-server` requires of its callers (`keel dev` makes one when unset). */
  /** `keel serve`'s bearer tokens: a JSON file `{ "tokens": [ { "token" | "sha256", "user", "roles" } ] }`. */
  KEEL_SERVE_TOKENS: z.string().min(1).optional(),
  KEEL_CODEC_TOKEN: z.string().min(16, 'expected at least 16 characters, e.g. from: openssl rand -hex 32').optional(),
  /**
   * `ip:port` where the worker serves Prometheus `/metrics` (Temporal's worker metrics and Keel's); unset,
   * nothing listens. One endpoint per process: the first worker of a process sets it.
   */
  KEEL_METRICS_ADDRESS: MetricsAddressSchema.optional(),
  /**
   * How often a worker with metrics reads the fleet-wide gauges (breaker states, disabled tools, sessions
   * waiting for approval) from Keel's store and Temporal's visibility (15s); parsed to milliseconds.
   */
  KEEL_METRICS_INTERVAL: z
    .string()
    .regex(/^\d+(\.\d+)?\s*(ms|s|m|h)$/, 'expected a duration such as 15s, 500ms or 1m')
    .default('15s')
    .transform((v) => Number(/^[\d.]+/.exec(v)![0]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[/[a-z]+$/.exec(v)![0] as 'ms' | 's' | 'm' | 'h'])
    .refine((ms) => ms >= 100, 'expected at least 100ms'),
});

/** The Temporal client profile Keel connects with. */
export interface TemporalProfile {
  /** TEMPORAL_PROFILE, else `default`. */
  name: string;
  /** Where the profile's file is, for messages: the TEMPORAL_CONFIG_FILE path, or the default location. */
  file: string;
  /** The profile as envconfig resolved it, TEMPORAL_* variables applied; certificates still paths or PEM. */
  settings: ClientConfigProfile;
}

/**
 * Validated configuration. The TEMPORAL_* fields hold the variables as set, except TEMPORAL_ADDRESS and
 * TEMPORAL_NAMESPACE, which are the resolved ones (variable, else profile, else default).
 */
export type KeelConfig = z.infer<typeof KeelEnvSchema> & {
  /** The resolved Temporal client profile: what `temporalConnectionOptions` connects with. */
  temporalProfile: TemporalProfile;
  /** The payload codec's keys (KEEL_CODEC_KEYS or KEEL_CODEC_KEYS_FILE); absent, payloads are not encrypted. */
  codecKeys?: CodecKeyring;
};

/** A configuration value is wrong; the message names the variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Keel's earlier names for the TLS files; set, they fail loudly rather than being silently ignored. */
const RENAMED = {
  TEMPORAL_TLS_CERT: 'TEMPORAL_TLS_CLIENT_CERT_PATH',
  TEMPORAL_TLS_KEY: 'TEMPORAL_TLS_CLIENT_KEY_PATH',
  TEMPORAL_TLS_CA: 'TEMPORAL_TLS_SERVER_CA_CERT_PATH',
} as const;

/**
 * Reads and validates Keel's environment. Empty strings count as unset. The Temporal profile is resolved
 * from this same `env` (never `process.env` behind it): the config file is TEMPORAL_CONFIG_FILE, else the
 * default location under `env`'s XDG_CONFIG_HOME or HOME, so an env without them reads no file.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): KeelConfig {
  const isSet = (k: string): boolean => env[k] !== undefined && env[k] !== '';
  for (const [old, now] of Object.entries(RENAMED)) {
    if (isSet(old)) throw new ConfigError(`${old}: renamed ${now} (Temporal's standard name); set that instead`);
  }
  const present = Object.fromEntries(
    Object.keys(KeelEnvSchema.shape).flatMap((k) => (isSet(k) ? [[k, env[k]]] : [])),
  );
  const parsed = KeelEnvSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(describeIssues(parsed.error, ''));
  }
  const c = parsed.data;
  // envconfig reads this variable but the TypeScript SDK has no such option: the server's certificate is
  // always verified. Refuse it rather than accept a setting that does nothing.
  if (env.TEMPORAL_TLS_DISABLE_HOST_VERIFICATION === 'true' || env.TEMPORAL_TLS_DISABLE_HOST_VERIFICATION === '1') {
    throw new ConfigError('TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: not supported by the TypeScript SDK (the server certificate is always verified); unset it');
  }
  const profile = loadTemporalProfile(env, c);
  const config: KeelConfig = {
    ...c,
    TEMPORAL_ADDRESS: profile.settings.address ?? c.TEMPORAL_ADDRESS,
    TEMPORAL_NAMESPACE: profile.settings.namespace ?? c.TEMPORAL_NAMESPACE,
    temporalProfile: profile,
  };
  const codecKeys = loadCodecKeys(c);
  if (codecKeys) config.codecKeys = codecKeys;
  checkTemporalProfile(config);
  tracingSettings(env);
  return config;
}

/** Parses the codec keys from KEEL_CODEC_KEYS or the KEEL_CODEC_KEYS_FILE file; errors name the variable, never key material. */
function loadCodecKeys(c: z.infer<typeof KeelEnvSchema>): CodecKeyring | undefined {
  if (c.KEEL_CODEC_KEYS !== undefined && c.KEEL_CODEC_KEYS_FILE !== undefined) {
    throw new ConfigError('KEEL_CODEC_KEYS_FILE: set KEEL_CODEC_KEYS or KEEL_CODEC_KEYS_FILE, not both');
  }
  let spec = c.KEEL_CODEC_KEYS;
  let origin = 'KEEL_CODEC_KEYS';
  if (c.KEEL_CODEC_KEYS_FILE !== undefined) {
    origin = `KEEL_CODEC_KEYS_FILE (${c.KEEL_CODEC_KEYS_FILE})`;
    try {
      spec = readFileSync(c.KEEL_CODEC_KEYS_FILE, 'utf8');
    } catch (err) {
      throw new ConfigError(`KEEL_CODEC_KEYS_FILE: cannot read ${c.KEEL_CODEC_KEYS_FILE} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  }
  if (spec === undefined) return undefined;
  try {
    return parseCodecKeys(spec);
  } catch (err) {
    if (err instanceof CodecKeyError) throw new ConfigError(`${origin}: ${err.message}`);
    throw err;
  }
}

/** Where each certificate of a profile can be set: the variables' stem and the TOML key's stem. */
const CERTIFICATES = {
  clientCert: ['TEMPORAL_TLS_CLIENT_CERT', 'client_cert'],
  clientKey: ['TEMPORAL_TLS_CLIENT_KEY', 'client_key'],
  serverCACert: ['TEMPORAL_TLS_SERVER_CA_CERT', 'server_ca_cert'],
} as const;
type Certificate = keyof typeof CERTIFICATES;

/** The profile's keys as the TOML file spells them, for messages. */
const TOML_KEYS: Record<string, string> = {
  apiKey: 'api_key',
  serverName: 'server_name',
  clientCert: 'client_cert_path/_data',
  clientKey: 'client_key_path/_data',
  serverCACert: 'server_ca_cert_path/_data',
  grpcMeta: 'grpc_meta',
};

/** A resolved profile's shape; values the variables set were checked already, so failures are the file's. */
const dataSource = z.union([z.object({ path: z.string().min(1) }), z.object({ data: z.instanceof(Uint8Array) })]);
const ProfileSchema = z.object({
  address: hostPort.optional(),
  namespace: namespaceName.optional(),
  apiKey: z.string().min(1).optional(),
  tls: z
    .object({
      disabled: z.boolean().optional(),
      serverName: z.string().min(1).optional(),
      clientCert: dataSource.optional(),
      clientKey: dataSource.optional(),
      serverCACert: dataSource.optional(),
    })
    .optional(),
  grpcMeta: z.record(z.string(), z.string()).optional(),
});

function profileLabel(p: Pick<TemporalProfile, 'name' | 'file'>): string {
  return `profile '${p.name}' in ${p.file}`;
}

/** Resolves the Temporal client profile with envconfig, from `env` only. */
function loadTemporalProfile(env: NodeJS.ProcessEnv, c: z.infer<typeof KeelEnvSchema>): TemporalProfile {
  const name = c.TEMPORAL_PROFILE ?? 'default';
  const file = c.TEMPORAL_CONFIG_FILE ?? 'the default temporal.toml';
  const where = c.TEMPORAL_CONFIG_FILE ? `TEMPORAL_CONFIG_FILE: ${file}` : 'the default Temporal config file (temporalio/temporal.toml)';
  // envconfig treats a missing file as an empty one; a file named explicitly must exist.
  let configSource: ConfigDataSource | undefined;
  if (c.TEMPORAL_CONFIG_FILE) {
    try {
      configSource = { data: readFileSync(c.TEMPORAL_CONFIG_FILE, 'utf8') };
    } catch (err) {
      throw new ConfigError(`TEMPORAL_CONFIG_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  }
  // The same env Keel validated, empty meaning unset, except TEMPORAL_GRPC_META_* where empty removes a header.
  const overrideEnvVars = Object.fromEntries(
    Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined && (e[1] !== '' || e[0].startsWith('TEMPORAL_GRPC_META_'))),
  );
  const load = (disableFile: boolean) =>
    loadClientConfigProfile({ ...(configSource ? { configSource } : {}), disableFile, overrideEnvVars });
  let settings: ClientConfigProfile;
  try {
    settings = load(false);
  } catch (err) {
    if (err instanceof TypeError && !c.TEMPORAL_PROFILE) {
      // envconfig 1.24 throws a TypeError on a file with no [profile.*] table at all (an empty file, say):
      // that is a file without profiles, so the variables alone make the profile.
      settings = load(true);
    } else if (err instanceof TypeError || (err instanceof Error && err.message.startsWith('Profile '))) {
      throw new ConfigError(`TEMPORAL_PROFILE: no profile '${name}' in ${file}`);
    } else if (err instanceof Error && 'line' in err) {
      // A TOML syntax error; its message quotes the offending line, which may hold an API key.
      throw new ConfigError(`${where} is not valid TOML (line ${String(err.line)})`);
    } else {
      // Such as "Cannot specify both client_cert_path and client_cert_data": key names, no values.
      throw new ConfigError(`${where}: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`);
    }
  }
  const checked = ProfileSchema.safeParse(settings);
  if (!checked.success) {
    const issues = checked.error.issues.map((i) => `${i.path.map((k) => TOML_KEYS[String(k)] ?? String(k)).join('.')}: ${i.message}`);
    throw new ConfigError(`${where}, profile '${name}': ${issues.join('; ')}`);
  }
  return { name, file, settings };
}

/** Names where a certificate was set: its variable, or its key in the profile's file. */
function certificateOrigin(c: KeelConfig, cert: Certificate, source: ConfigDataSource): string {
  const [stem, key] = CERTIFICATES[cert];
  const kind = 'path' in source ? 'PATH' : 'DATA';
  const variable = `${stem}_${kind}` as const;
  return c[variable] !== undefined ? variable : `${profileLabel(c.temporalProfile)}: tls.${key}_${kind.toLowerCase()}`;
}

/** The rules envconfig does not enforce: a whole mTLS pair, and an API key only over TLS. */
function checkTemporalProfile(c: KeelConfig): void {
  const { tls, apiKey } = c.temporalProfile.settings;
  // envconfig silently drops half a pair (no client certificate is sent at all).
  const half = tls?.clientCert && !tls.clientKey ? tls.clientCert : tls?.clientKey && !tls.clientCert ? tls.clientKey : undefined;
  if (half && tls) {
    const origin = certificateOrigin(c, tls.clientCert ? 'clientCert' : 'clientKey', half);
    throw new ConfigError(`${origin}: the client certificate and key go together (TEMPORAL_TLS_CLIENT_CERT_* and TEMPORAL_TLS_CLIENT_KEY_*): set both for mTLS, or neither`);
  }
  // envconfig turns TLS on for an API key, but an explicit "TLS off" wins, and the SDK then sends the key
  // in plaintext.
  if (apiKey !== undefined && tls?.disabled === true) {
    throw new ConfigError(
      c.TEMPORAL_TLS !== undefined
        ? 'TEMPORAL_TLS: an API key is only sent over TLS; unset TEMPORAL_TLS=false'
        : `${profileLabel(c.temporalProfile)}: tls.disabled is true, but an API key is only sent over TLS`,
    );
  }
}

/** Options for `Connection.connect` / `NativeConnection.connect`. */
export interface TemporalConnectionOptions {
  address: string;
  apiKey?: string;
  /** Present means TLS on: `{}` trusts the system's CAs; else mTLS pair, private CA, server name. */
  tls?: TLSConfig;
  /** gRPC headers sent with every call: the profile's `grpc_meta` and TEMPORAL_GRPC_META_* variables. */
  metadata?: Record<string, string>;
}

/**
 * Builds Temporal connection options from the resolved profile with envconfig's `toClientOptions`, reading
 * certificate files first (errors name the variable or profile key, and the path).
 */
export function temporalConnectionOptions(c: KeelConfig): TemporalConnectionOptions {
  checkTemporalProfile(c); // again: a caller may have built or changed the config after loadConfig
  const { settings } = c.temporalProfile;
  const read = (cert: Certificate): ConfigDataSource | undefined => {
    const source = settings.tls?.[cert];
    if (!source || !('path' in source)) return source;
    try {
      return { data: readFileSync(source.path) };
    } catch (err) {
      throw new ConfigError(`${certificateOrigin(c, cert, source)}: cannot read ${source.path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  };
  const tls: ClientConfigTLS | undefined = settings.tls && {
    ...settings.tls,
    clientCert: read('clientCert'),
    clientKey: read('clientKey'),
    serverCACert: read('serverCACert'),
  };
  const { connectionOptions: options } = toClientOptions({ ...settings, address: c.TEMPORAL_ADDRESS, tls });
  return {
    address: c.TEMPORAL_ADDRESS,
    ...(settings.apiKey !== undefined ? { apiKey: settings.apiKey } : {}),
    ...(options.tls ? { tls: options.tls === true ? {} : options.tls } : {}),
    ...(settings.grpcMeta ? { metadata: settings.grpcMeta } : {}),
  };
}

/** The model endpoint a worker uses. */
export interface ModelEndpoint {
  apiKey: string;
  baseURL?: string;
  /** `anthropic` when a real API key is set; `scripted` when only a base URL is (Keel's scripted server). */
  kind: 'anthropic' | 'scripted';
}

/** Default Claude model when ANTHROPIC_API_KEY is set. */
export const DEFAULT_CLAUDE_MODEL = 'claude-sonnet-4-5';

/** Decides which model endpoint the worker talks to. */
export function modelEndpoint(c: KeelConfig): ModelEndpoint {
  if (c.ANTHROPIC_API_KEY) {
    return {
      apiKey: c.ANTHROPIC_API_KEY,
      ...(c.ANTHROPIC_BASE_URL ? { baseURL: c.ANTHROPIC_BASE_URL } : {}),
      kind: 'anthropic',
    };
  }
  if (c.ANTHROPIC_BASE_URL) {
    return { apiKey: 'scripted', baseURL: c.ANTHROPIC_BASE_URL, kind: 'scripted' };
  }
  throw new ConfigError(
    'ANTHROPIC_API_KEY: not set, and no ANTHROPIC_BASE_URL either. Set ANTHROPIC_API_KEY for Claude, or run `keel dev`, which starts the scripted model',
  );
}

/**
 * The model a session uses when neither it nor its agent names one: KEEL_MODEL, else Claude when an API
 * key is set, else none (with the scripted model, a session names its scenario: `scripted/<name>`).
 */
export function defaultModel(c: KeelConfig): string | undefined {
  return c.KEEL_MODEL ?? (c.ANTHROPIC_API_KEY ? DEFAULT_CLAUDE_MODEL : undefined);
}

/** The data directory, resolved against the working directory. */
export function dataDir(c: KeelConfig): string {
  return path.resolve(c.KEEL_DATA_DIR);
}

/**
 * Which tracing the `OTEL_*` variables ask for, checked without loading OpenTelemetry, so a bad setting
 * stops a command at start with the variable named (`loadConfig` calls this).
 */
import { ConfigError } from '../config.js';

type Env = Readonly<Record<string, string | undefined>>;

/** Where spans go: the OTLP traces URL (when exporting with OTLP) and whether to print them too. */
export interface TracingSettings {
  /** `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces` (the spec's rule). */
  otlpTracesUrl?: string;
  console: boolean;
  serviceName?: string;
}

/**
 * The settings, or undefined when tracing is off: on when an OTLP endpoint is set
 * (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER`
 * names `console`; off under `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
 * @throws ConfigError naming the variable when a setting is one Keel cannot honour.
 */
export function tracingSettings(env: Env): TracingSettings | undefined {
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  for (const name of exporters) {
    if (!['otlp', 'console', 'none'].includes(name)) throw new ConfigError(`OTEL_TRACES_EXPORTER: '${name}' is not supported (use otlp, console or none)`);
  }
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL'] as const) {
    const protocol = env[name];
    if (protocol && protocol !== 'http/json') throw new ConfigError(`${name}: Keel exports traces as http/json (got '${protocol}'); every OTLP/HTTP collector accepts it`);
  }
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (endpoint && !/^https?:\/\/[^/\s]+/.test(endpoint)) throw new ConfigError(`OTEL_EXPORTER_OTLP_ENDPOINT: expected an http(s) URL, got '${endpoint}'`);
  if (env.OTEL_SDK_DISABLED?.toLowerCase() === 'true' || exporters.includes('none')) return undefined;
  const url = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || (endpoint ? `${endpoint.replace(/\/+$/, '')}/v1/traces` : undefined);
  const otlp = url && (exporters.length === 0 || exporters.includes('otlp')) ? url : undefined;
  const toConsole = exporters.includes('console');
  if (!otlp && !toConsole) return undefined;
  return { ...(otlp ? { otlpTracesUrl: otlp } : {}), console: toConsole, ...(env.OTEL_SERVICE_NAME ? { serviceName: env.OTEL_SERVICE_NAME } : {}) };
}

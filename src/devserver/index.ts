/**
 * Public API of Keel's embedded Temporal server: finding (or installing) the Temporal CLI and the
 * time-skipping test server, starting and stopping the dev server with Keel's search attributes, and
 * `ensureTemporal`, which reuses a running server or starts one.
 */
export {
  keelDataDir,
  resolveTemporalCli,
  resolveTestServer,
  TemporalCliNotFoundError,
  type ResolveOptions,
  type Resolved,
  type TemporalCliSource,
  type TestServerSource,
} from './resolve.js';
export {
  DEV_SERVER_DYNAMIC_CONFIG,
  DEV_SERVER_SQLITE_PRAGMAS,
  devServerTuningArgs,
  ensureTemporal,
  isTemporalUp,
  KEEL_SEARCH_ATTRIBUTES,
  registerSearchAttributes,
  startDevServer,
  startSdkDevServer,
  type CliSearchAttributeType,
  type DevServer,
  type EnsureTemporalOptions,
  type EnsureTemporalResult,
  type StartDevServerOptions,
  type StartSdkDevServerOptions,
} from './server.js';

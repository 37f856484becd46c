/** Configuration is validated once, at the edge, with errors that name the variable. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, defaultModel, loadConfig, modelEndpoint, temporalConnectionOptions } from '../src/config.js';

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    expect(loadConfig({})).toMatchObject({ TEMPORAL_ADDRESS: 'localhost:7233', TEMPORAL_NAMESPACE: 'default', KEEL_TASK_QUEUE: 'keel-agent', KEEL_DATA_DIR: '.keel' });
  });

  it.each([
    [{ TEMPORAL_ADDRESS: 'http://x:7233' }, /^TEMPORAL_ADDRESS: expected host:port/],
    [{ ANTHROPIC_BASE_URL: 'not a url' }, /^ANTHROPIC_BASE_URL: expected a URL/],
    [{ KEEL_LOG_LEVEL: 'loud' }, /^KEEL_LOG_LEVEL: /],
    [{ TEMPORAL_TLS: 'yes' }, /^TEMPORAL_TLS: /],
    [{ TEMPORAL_TLS_CLIENT_KEY_PATH: '/k.pem' }, /^TEMPORAL_TLS_CLIENT_KEY_PATH: the client certificate and key go together/],
    [{ TEMPORAL_TLS_CERT: '/c.pem' }, /^TEMPORAL_TLS_CERT: renamed TEMPORAL_TLS_CLIENT_CERT_PATH/],
    [{ TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: 'true' }, /^TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: not supported/],
    [{ TEMPORAL_CONFIG_FILE: '/nonexistent/temporal.toml' }, /^TEMPORAL_CONFIG_FILE: cannot read \/nonexistent\/temporal.toml \(ENOENT\)/],
  ])('rejects %o naming the variable', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it('never echoes a secret in an error', () => {
    try {
      loadConfig({ ANTHROPIC_API_KEY: 'sk-ant-secret', TEMPORAL_ADDRESS: 'bad' });
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).not.toContain('sk-ant-secret');
    }
  });
});

describe('connections and model endpoint', () => {
  it('uses TLS with an API key (Temporal Cloud) and refuses an API key without TLS', () => {
    expect(temporalConnectionOptions(loadConfig({ TEMPORAL_API_KEY: 'k', TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233' }))).toMatchObject({ apiKey: 'k', tls: {} });
    expect(() => temporalConnectionOptions(loadConfig({ TEMPORAL_API_KEY: 'k', TEMPORAL_TLS: 'false' }))).toThrow(/only sent over TLS/);
    expect(temporalConnectionOptions(loadConfig({}))).toEqual({ address: 'localhost:7233' });
  });

  it('names the missing certificate file', () => {
    const c = loadConfig({ TEMPORAL_TLS_CLIENT_CERT_PATH: '/nonexistent/c.pem', TEMPORAL_TLS_CLIENT_KEY_PATH: '/nonexistent/k.pem' });
    expect(() => temporalConnectionOptions(c)).toThrow(/TEMPORAL_TLS_CLIENT_CERT_PATH: cannot read \/nonexistent\/c.pem \(ENOENT\)/);
  });

  it('takes certificates as PEM in the environment too', () => {
    const c = loadConfig({ TEMPORAL_TLS_CLIENT_CERT_DATA: 'cert-pem', TEMPORAL_TLS_CLIENT_KEY_DATA: 'key-pem', TEMPORAL_TLS_SERVER_CA_CERT_DATA: 'ca-pem' });
    const { tls } = temporalConnectionOptions(c);
    expect(Buffer.from(tls?.clientCertPair?.crt ?? []).toString()).toBe('cert-pem');
    expect(Buffer.from(tls?.clientCertPair?.key ?? []).toString()).toBe('key-pem');
    expect(Buffer.from(tls?.serverRootCACertificate ?? []).toString()).toBe('ca-pem');
  });

  it('picks Claude with a key, the scripted model with only a base URL, and says what to do with neither', () => {
    expect(modelEndpoint(loadConfig({ ANTHROPIC_API_KEY: 'k' }))).toEqual({ kind: 'anthropic', apiKey: 'k' });
    expect(modelEndpoint(loadConfig({ ANTHROPIC_BASE_URL: 'http://127.0.0.1:1' }))).toMatchObject({ kind: 'scripted', baseURL: 'http://127.0.0.1:1' });
    expect(() => modelEndpoint(loadConfig({}))).toThrow(/ANTHROPIC_API_KEY: not set.*keel dev/);
  });

  it('names a model for new sessions without needing the endpoint: KEEL_MODEL, else Claude with a key, else none (a scripted session names its scenario)', () => {
    expect(defaultModel(loadConfig({}))).toBeUndefined();
    expect(defaultModel(loadConfig({ KEEL_MODEL: 'scripted/hello' }))).toBe('scripted/hello');
    expect(defaultModel(loadConfig({ ANTHROPIC_API_KEY: 'k' }))).toBe('claude-sonnet-4-5');
    expect(defaultModel(loadConfig({ ANTHROPIC_API_KEY: 'k', KEEL_MODEL: 'claude-opus-4-1' }))).toBe('claude-opus-4-1');
  });
});

describe('Temporal client profiles (the temporal CLI config file, through @temporalio/envconfig)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keel-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string): string => {
    const file = path.join(dir, name);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, text);
    return file;
  };
  const CA = '-----BEGIN CERTIFICATE-----\nprivate-ca\n-----END CERTIFICATE-----\n';
  const clientCert = write('client.pem', 'client-cert');
  const clientKey = write('client.key', 'client-key');
  const configFile = write(
    'temporal.toml',
    [
      '[profile.default]',
      'address = "localhost:7233"',
      '',
      '[profile.cloud]',
      'address = "ns.acct.tmprl.cloud:7233"',
      'namespace = "ns.acct"',
      'api_key = "key-from-profile"',
      '[profile.cloud.tls]',
      'server_name = "ns.acct.tmprl.cloud"',
      `server_ca_cert_data = '''${CA}'''`,
      '[profile.cloud.grpc_meta]',
      'team = "support"',
      '',
      '[profile.mtls]',
      'address = "temporal.internal:7233"',
      '[profile.mtls.tls]',
      `client_cert_path = "${clientCert}"`,
      `client_key_path = "${clientKey}"`,
      '',
      '[profile.plaintext-key]',
      'api_key = "key-from-profile"',
      '[profile.plaintext-key.tls]',
      'disabled = true',
      '',
      '[profile.bad-address]',
      'address = "http://x:7233"',
    ].join('\n'),
  );
  const profile = (name: string, env: Record<string, string> = {}) => loadConfig({ TEMPORAL_CONFIG_FILE: configFile, TEMPORAL_PROFILE: name, ...env });

  it('connects as the profile TEMPORAL_PROFILE names: address, namespace, API key, TLS and gRPC headers', () => {
    const c = profile('cloud');
    expect(c).toMatchObject({ TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233', TEMPORAL_NAMESPACE: 'ns.acct' });
    const options = temporalConnectionOptions(c);
    expect(options).toMatchObject({ address: 'ns.acct.tmprl.cloud:7233', apiKey: 'key-from-profile', tls: { serverNameOverride: 'ns.acct.tmprl.cloud' }, metadata: { team: 'support' } });
    expect(Buffer.from(options.tls?.serverRootCACertificate ?? []).toString()).toBe(CA);
  });

  it('reads an mTLS pair from the paths the profile gives', () => {
    const options = temporalConnectionOptions(profile('mtls'));
    expect(options.apiKey).toBeUndefined();
    expect(Buffer.from(options.tls?.clientCertPair?.crt ?? []).toString()).toBe('client-cert');
    expect(Buffer.from(options.tls?.clientCertPair?.key ?? []).toString()).toBe('client-key');
  });

  it('lets the TEMPORAL_* variables override the profile, setting by setting', () => {
    const c = profile('cloud', { TEMPORAL_ADDRESS: 'other.tmprl.cloud:7233', TEMPORAL_NAMESPACE: 'other', TEMPORAL_API_KEY: 'key-from-env', TEMPORAL_TLS_SERVER_NAME: 'other.tmprl.cloud' });
    expect(c).toMatchObject({ TEMPORAL_ADDRESS: 'other.tmprl.cloud:7233', TEMPORAL_NAMESPACE: 'other' });
    const options = temporalConnectionOptions(c);
    expect(options).toMatchObject({ address: 'other.tmprl.cloud:7233', apiKey: 'key-from-env', tls: { serverNameOverride: 'other.tmprl.cloud' } });
    // What the variables leave alone still comes from the profile.
    expect(Buffer.from(options.tls?.serverRootCACertificate ?? []).toString()).toBe(CA);
    // TEMPORAL_TLS=false turns the profile's TLS off; with an API key in play, Keel refuses.
    expect(temporalConnectionOptions(profile('mtls', { TEMPORAL_TLS: 'false' }))).toEqual({ address: 'temporal.internal:7233' });
    expect(() => profile('cloud', { TEMPORAL_TLS: 'false' })).toThrow(/^TEMPORAL_TLS: an API key is only sent over TLS/);
  });

  it('uses the default profile when TEMPORAL_PROFILE is not set', () => {
    expect(temporalConnectionOptions(loadConfig({ TEMPORAL_CONFIG_FILE: configFile }))).toEqual({ address: 'localhost:7233' });
  });

  it('names a profile that is not in the file', () => {
    expect(() => profile('nope')).toThrow(ConfigError);
    expect(() => profile('nope')).toThrow(`TEMPORAL_PROFILE: no profile 'nope' in ${configFile}`);
  });

  it("refuses a profile's API key with its TLS disabled, without echoing the key", () => {
    expect(() => profile('plaintext-key')).toThrow(ConfigError);
    expect(() => profile('plaintext-key')).toThrow(/profile 'plaintext-key' in .*: tls.disabled is true, but an API key is only sent over TLS/);
    expect(() => profile('plaintext-key')).not.toThrow(/key-from-profile/);
  });

  it('validates what the file says, naming the file, the profile and the key', () => {
    expect(() => profile('bad-address')).toThrow(ConfigError);
    expect(() => profile('bad-address')).toThrow(`TEMPORAL_CONFIG_FILE: ${configFile}, profile 'bad-address': address: expected host:port`);
  });

  it('reports a file that is not TOML by line, never quoting it (it may hold a key)', () => {
    const broken = write('broken.toml', '[profile.default]\napi_key = "sk-secret-unterminated\n');
    expect(() => loadConfig({ TEMPORAL_CONFIG_FILE: broken })).toThrow(`TEMPORAL_CONFIG_FILE: ${broken} is not valid TOML (line 2)`);
    expect(() => loadConfig({ TEMPORAL_CONFIG_FILE: broken })).not.toThrow(/sk-secret/);
  });

  it('takes a file without profiles as no profile', () => {
    const empty = write('empty.toml', '');
    expect(temporalConnectionOptions(loadConfig({ TEMPORAL_CONFIG_FILE: empty }))).toEqual({ address: 'localhost:7233' });
    expect(() => loadConfig({ TEMPORAL_CONFIG_FILE: empty, TEMPORAL_PROFILE: 'cloud' })).toThrow(/^TEMPORAL_PROFILE: no profile 'cloud'/);
  });

  it.runIf(process.platform === 'linux')('finds the default file through the env it is given, not the process environment', () => {
    const home = path.join(dir, 'home');
    write('home/.config/temporalio/temporal.toml', '[profile.default]\naddress = "from-home:7233"\n');
    expect(loadConfig({ HOME: home }).TEMPORAL_ADDRESS).toBe('from-home:7233');
    expect(loadConfig({ XDG_CONFIG_HOME: path.join(home, '.config') }).TEMPORAL_ADDRESS).toBe('from-home:7233');
    expect(() => loadConfig({ HOME: home, TEMPORAL_PROFILE: 'cloud' })).toThrow("TEMPORAL_PROFILE: no profile 'cloud' in the default temporal.toml");
    // An env without HOME or XDG_CONFIG_HOME reads no file at all, whatever this machine has.
    expect(() => loadConfig({ TEMPORAL_PROFILE: 'cloud' })).toThrow(/^TEMPORAL_PROFILE: no profile 'cloud'/);
  });
});

/** Configuration is validated once, at the edge, with errors that name the variable. */
import { describe, expect, it } from 'vitest';
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
    [{ TEMPORAL_TLS_KEY: '/k.pem' }, /TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together/],
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
    const c = loadConfig({ TEMPORAL_TLS_CERT: '/nonexistent/c.pem', TEMPORAL_TLS_KEY: '/nonexistent/k.pem' });
    expect(() => temporalConnectionOptions(c)).toThrow(/TEMPORAL_TLS_CERT: cannot read \/nonexistent\/c.pem \(ENOENT\)/);
  });

  it('picks Claude with a key, the scripted model with only a base URL, and says what to do with neither', () => {
    expect(modelEndpoint(loadConfig({ ANTHROPIC_API_KEY: 'k' }))).toMatchObject({ kind: 'anthropic', defaultModel: 'claude-sonnet-4-5' });
    expect(modelEndpoint(loadConfig({ ANTHROPIC_BASE_URL: 'http://127.0.0.1:1' }))).toMatchObject({ kind: 'scripted', defaultModel: 'scripted/refund-demo' });
    expect(() => modelEndpoint(loadConfig({}))).toThrow(/ANTHROPIC_API_KEY: not set.*keel dev/);
  });

  it('names a model for new sessions without needing the endpoint: KEEL_MODEL, else Claude with a key, else the demo scenario', () => {
    expect(defaultModel(loadConfig({}))).toBe('scripted/refund-demo');
    expect(defaultModel(loadConfig({ ANTHROPIC_API_KEY: 'k' }))).toBe('claude-sonnet-4-5');
    expect(defaultModel(loadConfig({ ANTHROPIC_API_KEY: 'k', KEEL_MODEL: 'claude-opus-4-1' }))).toBe('claude-opus-4-1');
  });
});

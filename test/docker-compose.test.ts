/**
 * Checks docker-compose.yml, the Dockerfile and .dockerignore without a Docker engine: the file is parsed
 * with `yaml` and compared against what Keel itself declares (its env schema, its search attributes,
 * its CLI entry point). When Debian's `docker-compose` is on PATH it also validates the file with it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DEFAULT_CLAUDE_MODEL, KeelEnvSchema, loadConfig } from '../src/config.js';
import { KEEL_SEARCH_ATTRIBUTES } from '../src/devserver/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const composePath = path.join(root, 'docker-compose.yml');
const composeText = readFileSync(composePath, 'utf8');

type Env = Record<string, string>;
interface Service {
  image?: string;
  build?: unknown;
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Env | string[];
  ports?: (string | number | { target?: number; published?: number | string })[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string | string[] };
  restart?: string;
}
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const compose = parse(composeText) as Compose;
const services = compose.services;

function service(name: string): Service {
  const s = services[name];
  if (!s) throw new Error(`docker-compose.yml has no service ${name}`);
  return s;
}

/** A service's environment as a map, whichever of the two compose forms the file uses. */
function envOf(s: Service): Env {
  const e = s.environment ?? {};
  if (!Array.isArray(e)) return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, String(v ?? '')]));
  return Object.fromEntries(
    e.map((entry) => {
      const i = entry.indexOf('=');
      return i < 0 ? [entry, ''] : [entry.slice(0, i), entry.slice(i + 1)];
    }),
  );
}

/** A command as one string (compose accepts a string or a list). */
function commandOf(s: Service): string {
  return Array.isArray(s.command) ? s.command.join(' ') : (s.command ?? '');
}

/** `${VAR:-default}`, `${VAR-default}` and `${VAR}` with VAR unset, as compose would substitute them. */
function interpolateUnset(value: string): string {
  return value.replace(/\$\{(\w+)(?::?-([^}]*))?\}/g, (_m, _name: string, def: string | undefined) => def ?? '');
}

/** Published (host) and target (container) ports of a service. */
function portsOf(s: Service): { published: number; target: number }[] {
  return (s.ports ?? []).map((p) => {
    if (typeof p === 'object') return { published: Number(p.published ?? p.target), target: Number(p.target) };
    const parts = String(p).replace(/\/(tcp|udp)$/, '').split(':');
    const target = Number(parts.at(-1));
    const published = parts.length > 1 ? Number(parts.at(-2)) : target;
    return { published, target };
  });
}

function dependsOn(s: Service): Record<string, string> {
  const d = s.depends_on ?? [];
  if (Array.isArray(d)) return Object.fromEntries(d.map((n) => [n, 'service_started']));
  return Object.fromEntries(Object.entries(d).map(([n, v]) => [n, v.condition ?? 'service_started']));
}

const EXPECTED_SERVICES = ['postgresql', 'temporal', 'temporal-admin-tools', 'temporal-ui', 'keel-worker', 'keel-demo'];
const knownKeelEnv = new Set(Object.keys(KeelEnvSchema.shape));

describe('docker-compose.yml', () => {
  it('defines the six services', () => {
    expect(Object.keys(services).sort()).toEqual([...EXPECTED_SERVICES].sort());
  });

  it('pins every image to a tag (no latest, no untagged image)', () => {
    for (const [name, s] of Object.entries(services)) {
      if (!s.image) {
        expect(s.build, `${name} has neither image nor build`).toBeDefined();
        continue;
      }
      const m = /^(?<repo>[^@]+?)(?::(?<tag>[\w][\w.-]*))?(?:@sha256:[0-9a-f]{64})?$/.exec(s.image);
      expect(m, `${name}: cannot read image ${s.image}`).not.toBeNull();
      expect(m?.groups?.tag, `${name}: image ${s.image} has no tag`).toBeDefined();
      expect(m?.groups?.tag, `${name}: image ${s.image} uses latest`).not.toBe('latest');
      expect(s.image, `${name}: image tag comes from an unset variable`).not.toMatch(/\$/);
    }
    expect(service('postgresql').image).toMatch(/^postgres:16(\.|$)/);
    expect(service('temporal').image).toMatch(/^temporalio\/auto-setup:1\.29(\.|$)/);
    expect(service('temporal-admin-tools').image).toMatch(/^temporalio\/admin-tools:1\.29\./);
    expect(service('temporal-ui').image).toMatch(/^temporalio\/ui:2\./);
  });

  it('publishes Temporal on 7233 and the Web UI on 8080', () => {
    expect(portsOf(service('temporal'))).toContainEqual({ published: 7233, target: 7233 });
    expect(portsOf(service('temporal-ui'))).toContainEqual({ published: 8080, target: 8080 });
    expect(envOf(service('temporal-ui')).TEMPORAL_ADDRESS).toBe('temporal:7233');
  });

  it('depends_on names existing services only, and the start order is sound', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const [dep, condition] of Object.entries(dependsOn(s))) {
        expect(services, `${name} depends on unknown service ${dep}`).toHaveProperty([dep]);
        expect(dep, `${name} depends on itself`).not.toBe(name);
        expect(['service_started', 'service_healthy', 'service_completed_successfully']).toContain(condition);
        if (condition === 'service_healthy') {
          expect(service(dep).healthcheck?.test, `${name} waits for ${dep} to be healthy, but ${dep} has no healthcheck`).toBeDefined();
        }
      }
    }
    expect(dependsOn(service('temporal'))).toMatchObject({ postgresql: 'service_healthy' });
    expect(dependsOn(service('keel-worker'))).toMatchObject({
      temporal: 'service_healthy',
      'temporal-admin-tools': 'service_completed_successfully',
    });
    expect(service('keel-worker').restart).toBe('unless-stopped');
  });

  it('declares the named volumes it mounts', () => {
    const declared = Object.keys(compose.volumes ?? {});
    for (const [name, s] of Object.entries(services)) {
      const volumes = (s as { volumes?: (string | { source?: string })[] }).volumes ?? [];
      for (const v of volumes) {
        const source = typeof v === 'string' ? v.split(':')[0] : v.source;
        if (source && !source.startsWith('.') && !source.startsWith('/') && !source.startsWith('~')) {
          expect(declared, `${name} mounts undeclared volume ${source}`).toContain(source);
        }
      }
    }
  });

  describe('keel-worker', () => {
    const worker = service('keel-worker');
    const env = envOf(worker);

    it('sets only environment variables Keel knows (catches typos)', () => {
      // KEEL_DEMO_URL is the example tools' own setting (they read it from their environment), not Keel's.
      const unknown = Object.keys(env).filter((k) => !knownKeelEnv.has(k) && k !== 'KEEL_DEMO_URL');
      expect(unknown, `not in KeelEnvSchema: ${unknown.join(', ')}`).toEqual([]);
      const demoUnknown = Object.keys(envOf(service('keel-demo'))).filter((k) => !knownKeelEnv.has(k));
      expect(demoUnknown, `keel-demo sets variables not in KeelEnvSchema: ${demoUnknown.join(', ')}`).toEqual([]);
    });

    it('sets every variable a compose worker needs', () => {
      for (const k of [
        'TEMPORAL_ADDRESS',
        'TEMPORAL_NAMESPACE',
        'KEEL_TASK_QUEUE',
        'ANTHROPIC_API_KEY',
        'ANTHROPIC_BASE_URL',
        'KEEL_MODEL',
        'KEEL_DEMO_URL',
        'KEEL_AUDIT_URL',
        'KEEL_TOOLS',
      ]) {
        expect(env, `keel-worker does not set ${k}`).toHaveProperty([k]);
      }
      expect(env.TEMPORAL_NAMESPACE).toBe('default');
      expect(env.KEEL_TASK_QUEUE).toBe('keel-agent');
      expect(interpolateUnset(env.KEEL_MODEL ?? '')).toBe(DEFAULT_CLAUDE_MODEL);
    });

    it('takes the model credentials from the user environment, never from the file', () => {
      expect(env.ANTHROPIC_API_KEY).toMatch(/^\$\{ANTHROPIC_API_KEY(:?-)?\}$/);
      expect(env.ANTHROPIC_BASE_URL).toMatch(/^\$\{ANTHROPIC_BASE_URL(:?-)?\}$/);
      expect(composeText).not.toMatch(/sk-ant-[\w-]{8,}/);
    });

    it('points at the temporal service, the demo service and the postgresql service', () => {
      const [host, port] = (env.TEMPORAL_ADDRESS ?? '').split(':');
      expect(host).toBe('temporal');
      expect(portsOf(service('temporal')).map((p) => p.target)).toContain(Number(port));

      const demo = new URL(env.KEEL_DEMO_URL ?? '');
      expect(demo.hostname).toBe('keel-demo');
      expect(commandOf(service('keel-demo'))).toMatch(new RegExp(`--port[ =]${demo.port}(\\s|$)`));

      const audit = new URL(env.KEEL_AUDIT_URL ?? '');
      expect(audit.protocol).toBe('postgres:');
      expect(audit.hostname).toBe('postgresql');
      expect(audit.username).toBe(envOf(service('postgresql')).POSTGRES_USER);
      // The audit database is created by the admin-tools job.
      expect(envOf(service('temporal-admin-tools')).SQL_DATABASE).toBe(audit.pathname.slice(1));
    });

    it('passes Keel config validation once compose has substituted the defaults', () => {
      const substituted = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, interpolateUnset(v)]));
      const config = loadConfig(substituted);
      expect(config.TEMPORAL_ADDRESS).toBe('temporal:7233');
      expect(config.KEEL_TOOLS).toBe('examples/support-desk/tools.ts');
      expect(existsSync(path.join(root, config.KEEL_TOOLS!))).toBe(true);
      expect(() => loadConfig({ ...substituted, ANTHROPIC_API_KEY: 'sk-test' })).not.toThrow();
    });

    it('runs bin/keel.js worker, which exists', () => {
      expect(worker.build).toBeDefined();
      expect(commandOf(worker)).toBe('node bin/keel.js worker');
      expect(existsSync(path.join(root, 'bin/keel.js'))).toBe(true);
      expect(commandOf(service('keel-demo'))).toMatch(/^node node_modules\/tsx\/dist\/cli\.mjs examples\/support-desk\/demo\.ts --services-only\b.*--host 0\.0\.0\.0/);
      expect(existsSync(path.join(root, 'examples/support-desk/demo.ts'))).toBe(true);
    });
  });

  it('temporal-admin-tools registers exactly KEEL_SEARCH_ATTRIBUTES on namespace default', () => {
    const admin = service('temporal-admin-tools');
    const script = [admin.entrypoint, admin.command].flat().filter((x) => x !== undefined).join('\n');
    const registered: Record<string, string> = {};
    const re = /temporal operator search-attribute create --namespace (\S+) --name (\w+) --type (\w+) --address (\S+)/g;
    for (const m of script.matchAll(re)) {
      expect(m[1]).toBe('default');
      expect(m[4]).toBe('temporal:7233');
      expect(registered, `${m[2]} registered twice`).not.toHaveProperty([m[2]!]);
      registered[m[2]!] = m[3]!;
    }
    expect(registered).toEqual({ ...KEEL_SEARCH_ATTRIBUTES });
    // A second run must not fail on attributes that are already there.
    expect(script).toMatch(/already exists/);
    expect(dependsOn(admin)).toMatchObject({ temporal: 'service_healthy' });
    expect(admin.restart).toBe('no');
  });

  it('healthchecks use tools that exist in their images', () => {
    expect(String(service('postgresql').healthcheck?.test)).toMatch(/pg_isready/);
    expect(String(service('temporal').healthcheck?.test)).toMatch(/temporal operator cluster health|tctl|nc -z/);
  });

  const hasDockerCompose = !spawnSync('docker-compose', ['version'], { stdio: 'ignore' }).error;
  it.skipIf(!hasDockerCompose)('docker-compose config -q accepts the file', () => {
    const r = spawnSync('docker-compose', ['-f', composePath, 'config', '-q'], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, ANTHROPIC_API_KEY: '' },
    });
    expect(r.status, r.stderr).toBe(0);
  });
});

describe('Dockerfile and .dockerignore', () => {
  const dockerfile = readFileSync(path.join(root, 'Dockerfile'), 'utf8');
  // Instructions, with line continuations joined and comments dropped.
  const instructions = dockerfile
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const froms = instructions.filter((l) => /^FROM\s/i.test(l));
  const lastFrom = instructions.map((l) => /^FROM\s/i.test(l)).lastIndexOf(true);
  const finalStage = instructions.slice(lastFrom);

  it('builds on node:20-bookworm-slim with the build tools better-sqlite3 needs, via npm ci', () => {
    expect(froms.length).toBeGreaterThan(0);
    for (const f of froms) expect(f).toMatch(/^FROM\s+node:20-bookworm-slim\b/i);
    const run = instructions.filter((l) => /^RUN\s/i.test(l)).join('\n');
    for (const pkg of ['python3', 'make', 'g++']) expect(run).toContain(pkg);
    expect(run).toMatch(/\bnpm ci\b/);
    expect(dockerfile).toMatch(/COPY\s+package\.json\s+package-lock\.json/);
  });

  it('runs as the node user and defaults to the worker command, on a file that exists', () => {
    expect(finalStage.filter((l) => /^USER\s/i.test(l)).at(-1)).toMatch(/^USER\s+node$/i);
    const cmd = finalStage.filter((l) => /^CMD\s/i.test(l)).at(-1);
    expect(cmd).toBeDefined();
    const argv = JSON.parse(cmd!.replace(/^CMD\s+/i, '')) as unknown;
    expect(argv).toEqual(['node', 'bin/keel.js', 'worker']);
    expect(commandOf(service('keel-worker'))).toBe((argv as string[]).join(' '));
    expect(existsSync(path.join(root, 'bin/keel.js'))).toBe(true);
  });

  it('.dockerignore keeps node_modules, .keel and .git out of the build context', () => {
    const ignored = readFileSync(path.join(root, '.dockerignore'), 'utf8')
      .split(/\r?\n/)
      .map((l) => l.trim().replace(/^\/+|\/+$/g, ''))
      .filter((l) => l && !l.startsWith('#'));
    for (const entry of ['node_modules', '.keel', '.git']) expect(ignored).toContain(entry);
  });
});

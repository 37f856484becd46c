/**
 * Prometheus for the metrics tests: reading a `/metrics` page (the text exposition format) into samples,
 * and a real `prometheus` server (Debian's package, as CI installs it) on a free port with a throw-away
 * storage directory, scraping given targets and evaluating given rules, with its alerts API.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { freePort, sigkill, until } from './processes.js';

/** One sample of a scrape: metric name, labels, value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (comments skipped). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** Fetches and parses a `/metrics` page. */
export async function scrape(url: string): Promise<Sample[]> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  return parseMetrics(await res.text());
}

/** The samples of `name` whose labels include `labels`. */
export function select(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The sum of the samples of `name` whose labels include `labels` (undefined when there is none). */
export function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = select(samples, name, labels);
  return hits.length ? hits.reduce((sum, s) => sum + s.value, 0) : undefined;
}

/** An alert as Prometheus's `/api/v1/alerts` reports it. */
export interface PromAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: 'pending' | 'firing';
  value: string;
}

/** A running Prometheus server. */
export interface PrometheusServer {
  url: string;
  /** The alerts now pending or firing. */
  alerts(): Promise<PromAlert[]>;
  /** An instant query's result vector. */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  /** Stops it and removes its storage. */
  close(): Promise<void>;
}

/**
 * Starts `prometheus` (from PATH) scraping `targets` (`host:port`) every `interval` and evaluating the rule
 * `groups` at the same interval; resolves once it is ready.
 */
export async function startPrometheus(opts: { targets: string[]; groups: unknown[]; interval?: string }): Promise<PrometheusServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-prometheus-'));
  const interval = opts.interval ?? '1s';
  await writeFile(path.join(dir, 'rules.yml'), stringify({ groups: opts.groups }));
  await writeFile(
    path.join(dir, 'prometheus.yml'),
    stringify({
      global: { scrape_interval: interval, evaluation_interval: interval },
      rule_files: ['rules.yml'],
      scrape_configs: [{ job_name: 'keel-worker', static_configs: [{ targets: opts.targets }] }],
    }),
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let out = '';
  const child: ChildProcess = spawn(
    'prometheus',
    [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const close = async () => {
    await sigkill(child);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await until(async () => {
      if (child.exitCode !== null) throw new Error(`prometheus exited (${child.exitCode}): ${out}`);
      return (await fetch(`${url}/-/ready`)).ok ? true : undefined;
    }, 'prometheus to be ready', 20_000);
  } catch (err) {
    await close();
    throw err;
  }
  const api = async <T>(p: string): Promise<T> => {
    const body = (await (await fetch(`${url}${p}`)).json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${p}: ${body.error ?? body.status}`);
    return body.data;
  };
  return {
    url,
    alerts: async () => (await api<{ alerts: PromAlert[] }>('/api/v1/alerts')).alerts,
    query: async (expr) => (await api<{ result: Array<{ metric: Record<string, string>; value: [number, string] }> }>(`/api/v1/query?query=${encodeURIComponent(expr)}`)).result,
    close,
  };
}

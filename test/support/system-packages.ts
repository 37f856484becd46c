/**
 * The Debian packages some tests drive (chromium for the Web UI, docker-compose to validate the compose
 * file, prometheus and promtool for the alert rules), found on PATH or installed with apt-get when the test
 * run may (root, apt-get present), so `npm test` on a fresh machine needs nothing installed by hand. Where
 * they cannot be installed, the tests that need them say they were skipped; under `CI=true` that is an error.
 */
import { execFileSync, spawnSync } from 'node:child_process';

/** A command a test needs and the Debian package that provides it. */
export interface SystemPackage {
  command: string;
  pkg: string;
}

export const TEST_PACKAGES: SystemPackage[] = [
  { command: 'chromium', pkg: 'chromium' },
  { command: 'docker-compose', pkg: 'docker-compose' },
  { command: 'promtool', pkg: 'prometheus' },
  { command: 'prometheus', pkg: 'prometheus' },
];

/** True when `command` is on PATH. */
export function onPath(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Installs the packages whose commands are missing, when it can; returns the commands still missing.
 * @param log - one line per step.
 */
export function ensureSystemPackages(needed: SystemPackage[], log: (line: string) => void): string[] {
  const missing = needed.filter((n) => !onPath(n.command));
  if (missing.length === 0) return [];
  const pkgs = [...new Set(missing.map((m) => m.pkg))];
  const canInstall = process.getuid?.() === 0 && onPath('apt-get');
  if (!canInstall) {
    log(`not installed: ${missing.map((m) => m.command).join(', ')} (apt-get install -y ${pkgs.join(' ')}); the tests that need them are skipped`);
    return missing.map((m) => m.command);
  }
  log(`installing ${pkgs.join(', ')} from Debian for the tests that drive them (about a minute)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    execFileSync('apt-get', ['update', '-qq'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    execFileSync('apt-get', ['install', '-y', '-qq', ...pkgs], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  } catch (err) {
    log(`apt-get failed (${err instanceof Error ? err.message.split('\n')[0] : String(err)}); the tests that need ${pkgs.join(', ')} are skipped`);
  }
  return needed.filter((n) => !onPath(n.command)).map((n) => n.command);
}

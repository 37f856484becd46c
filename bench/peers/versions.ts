/**
 * Small facts the report prints under each engine: installed package versions (read from the package's
 * own `package.json` file, found the way Node resolves packages from here: this package's `node_modules`,
 * then the repository root's; some packages do not export their `package.json`), the Temporal server's
 * version, and the durability pragmas of a SQLite file.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import type { BenchStack } from '../support.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The version of an installed package, or of the repository itself for `keel`; `?` when not found. */
export function pkgVersion(name: string): string {
  const candidates =
    name === 'keel' ? [path.join(HERE, '..', '..', 'package.json')] : [HERE, path.join(HERE, '..', '..')].map((d) => path.join(d, 'node_modules', name, 'package.json'));
  for (const file of candidates) {
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version?: string }).version ?? '?';
  }
  return '?';
}

/** `server 1.32.0` from the dev server's `GetSystemInfo`. */
export async function temporalServerVersion(stack: BenchStack): Promise<string> {
  const info = await stack.keelWorker.connection.workflowService.getSystemInfo({});
  return `Temporal server ${info.serverVersion ?? '?'}`;
}

/**
 * A SQLite file's `journal_mode` (kept in the file when it is WAL) and the `synchronous` level a new
 * better-sqlite3 connection to it gets (this build's default, which is what a program that does not set
 * it runs with), read-only.
 */
export function sqlitePragmas(file: string): { journalMode: string; synchronous: string } {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const sync = Number(db.pragma('synchronous', { simple: true }));
    return { journalMode: String(db.pragma('journal_mode', { simple: true })), synchronous: SYNCHRONOUS[sync] ?? String(sync) };
  } finally {
    db.close();
  }
}

/** SQLite's `synchronous` levels by number. */
export const SYNCHRONOUS = ['OFF', 'NORMAL', 'FULL', 'EXTRA'];

/**
 * `npm run redteam`: plays the red-team suite (./cases.ts) on a fresh embedded stack and prints its
 * table. Exits 1 if any attacker-chosen side effect was executed without a person's approval.
 */
import { formatReport, runRedTeam } from './suite.js';

const report = await runRedTeam();
process.stdout.write(`${formatReport(report)}\n`);
process.exit(report.attackSuccesses === 0 && report.benignCompleted === report.benign ? 0 : 1);

/**
 * The foundation's acceptance criterion, in a real browser: the Temporal Web UI shows a Keel session
 * with its activities named after its tools. A separate dev server with the Web UI (the shared test
 * server is headless), the refund demo played to completion on it, then Debian's headless chromium
 * (driven by playwright-core) reads the session page, its timeline, its event history, its user
 * metadata and the workflows list. The last page is saved to `.keel/test/web-ui-session.png`.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Browser, Locator, Page } from 'playwright-core';
import { ROOT } from './support/harness.js';
import { hasChromium, launchChromium, startUiStack, type UiStack } from './support/browser.js';
import { approveUntilDone } from './support/harness.js';

const TOOLS = ['lookup_customer', 'get_order', 'search_kb', 'issue_refund', 'send_email'] as const;
const PROMPT_FIRST_LINE = 'My keyboard arrived damaged, order ord_1001.';
const PROMPT = `${PROMPT_FIRST_LINE}\nIt was cracked out of the box; please refund it.`;
/** Playwright's auto-waiting budget: the UI is a SvelteKit app that renders client-side. */
const UI_TIMEOUT = 30_000;
const SHOT_DIR = path.join(ROOT, '.keel', 'test');

let stack: UiStack | undefined;
let browser: Browser | undefined;

beforeAll(async () => {
  if (!hasChromium) return;
  stack = await startUiStack('web-ui', inject('workflowBundlePath'));
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

/** Waits for `locator` to be visible, with the UI budget. */
async function visible(locator: Locator): Promise<void> {
  await locator.waitFor({ state: 'visible', timeout: UI_TIMEOUT });
}

/** Like {@link visible}, reloading the page every 5 s: lists do not refresh themselves. */
async function visibleAfterReloads(page: Page, locator: Locator): Promise<void> {
  const deadline = Date.now() + UI_TIMEOUT;
  for (;;) {
    try {
      await locator.waitFor({ state: 'visible', timeout: Math.min(5_000, Math.max(1, deadline - Date.now())) });
      return;
    } catch (err) {
      if (Date.now() >= deadline) throw err;
      await page.reload();
    }
  }
}

describe.skipIf(!hasChromium)('Temporal Web UI', () => {
  it('shows a session: id, summary, Completed, and activities named after its tools', { timeout: 120_000 }, async () => {
    const s = stack!;
    const sessionId = `session-web-ui-${Date.now()}`;
    await s.client.startSession({
      sessionId,
      prompt: PROMPT,
      user: { id: 'agent-operator-1', roles: ['support'] },
      model: 'scripted/refund-demo',
    });
    const [result] = await s.withWorker(() => Promise.all([s.client.result(sessionId), approveUntilDone(s.client, sessionId)]));
    expect(result.toolCalls.map((t) => t.name)).toEqual([...TOOLS]);

    mkdirSync(SHOT_DIR, { recursive: true });
    const context = await browser!.newContext({ viewport: { width: 1600, height: 1200 } });
    const page: Page = await context.newPage();
    try {
      // The session page opens on its timeline; the UI redirects to `…/<runId>/timeline`.
      await page.goto(`${s.uiUrl}/namespaces/default/workflows/${encodeURIComponent(sessionId)}`);
      await visible(page.getByRole('heading', { name: sessionId }));
      await visible(page.getByText('Completed', { exact: true }).first());
      await visible(page.getByText('agentSession', { exact: true }).first());
      // Timeline bars are labelled "<activity type> • <summary>"; the bullet keeps the Input/Result
      // JSON (which also names the tools) out of the match.
      for (const tool of TOOLS) await visible(page.getByText(`${tool} • `).first());
      await visible(page.getByText('callModel • model turn').first());

      // Event history: one Activity Task Scheduled row per tool call, whose Activity Type is the tool.
      await page.getByRole('tab', { name: /Event History/ }).click();
      const scheduled = page.getByRole('row').filter({ hasText: 'Activity Task Scheduled' });
      await visible(scheduled.first());
      await expect.poll(() => scheduled.count(), { timeout: UI_TIMEOUT }).toBe(10);
      for (const tool of TOOLS) {
        const row = scheduled.filter({ hasText: new RegExp(`Activity Type\\s*${tool}\\b`) });
        await visible(row);
        expect(await row.count()).toBe(1);
      }
      expect(await scheduled.filter({ hasText: /Activity Type\s*callModel\b/ }).count()).toBe(5);
      await page.screenshot({ path: path.join(SHOT_DIR, 'web-ui-history.png'), fullPage: true });

      // User metadata: the static summary (the prompt's first line) and details, each rendered as
      // Markdown in its own iframe.
      await page.getByRole('tab', { name: 'User Metadata' }).click();
      await visible(page.getByRole('heading', { name: 'Summary', exact: true }));
      const summary = page.locator('iframe#user-metadata-summary').contentFrame();
      await visible(summary.getByText(PROMPT_FIRST_LINE, { exact: true }));
      const details = page.locator('iframe#user-metadata-details').contentFrame();
      await visible(details.getByText('agent-operator-1', { exact: false }).first());

      // Back on the timeline for the picture of record.
      await page.getByRole('tab', { name: 'Timeline' }).click();
      await visible(page.getByText('send_email • ').first());
      await page.screenshot({ path: path.join(SHOT_DIR, 'web-ui-session.png'), fullPage: true });

      // The workflows list shows the session, Completed, as an agentSession.
      await page.goto(`${s.uiUrl}/namespaces/default/workflows`);
      const listRow = page.getByRole('row').filter({ hasText: sessionId });
      await visibleAfterReloads(page, listRow);
      await visible(listRow.getByText('Completed', { exact: true }));
      await visible(listRow.getByText('agentSession', { exact: true }));
      await page.screenshot({ path: path.join(SHOT_DIR, 'web-ui-list.png'), fullPage: true });
    } catch (err) {
      await page.screenshot({ path: path.join(SHOT_DIR, 'web-ui-failure.png'), fullPage: true }).catch(() => {});
      throw err;
    } finally {
      await context.close();
    }
  });
});

// End-to-end test of paywarden's operator console in headless Debian Chromium.
//
//   node tests/browser/console.mjs approve BASE_URL APPROVAL_ID PAYMENT_ID
//   node tests/browser/console.mjs inspect BASE_URL APPROVAL_ID PAYMENT_ID RECEIPT_ID DOWNLOAD_TO
//
// BASE_URL is the real paywarden server with operator alice (token "alice-token"). `approve`:
// as a person would, signs in, opens the console's approval queue, opens the pending refund,
// writes a note and clicks Approve. `inspect` (after the agent executed it): finds the refund in
// the activity log (filtered by the payment), on the payment's timeline (approved by alice,
// the amount as "€750.00", the receipt), opens the receipt and downloads it to DOWNLOAD_TO,
// evaluates the policy playground, and opens the entities page. Every page is screenshot at
// 1280 px and 390 px into $PAYWARDEN_SCREENSHOT_DIR (target/console-screenshots by default),
// and checked not to scroll sideways as a whole. Driven by
// crates/paywarden/tests/console_browser.rs; set up with scripts/setup-browser.sh.

import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const OPERATOR = { username: 'alice', password: 'alice-token' };
const WIDTHS = [1280, 390];

const [phase, base, approvalId, paymentId, receiptId, downloadTo] = process.argv.slice(2);
if (!['approve', 'inspect'].includes(phase) || !base || !approvalId || !paymentId
    || (phase === 'inspect' && (!receiptId || !downloadTo))) {
  console.error('usage: node tests/browser/console.mjs approve|inspect BASE_URL APPROVAL_ID PAYMENT_ID [RECEIPT_ID DOWNLOAD_TO]');
  process.exit(2);
}
if (!existsSync(CHROMIUM)) {
  console.error(`${CHROMIUM} is missing; run scripts/setup-browser.sh`);
  process.exit(2);
}
const shots = process.env.PAYWARDEN_SCREENSHOT_DIR || join(process.cwd(), 'target/console-screenshots');
mkdirSync(shots, { recursive: true });
let passed = 0;

function step(text) {
  console.log(`- ${text}`);
}

/** Screenshots the current page at every width; the page must not scroll sideways. */
async function capture(page, name) {
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 900 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${name} at ${width} px scrolls sideways by ${overflow} px`);
    const path = join(shots, `${name}-${width}.png`);
    await page.screenshot({ path, fullPage: true });
    step(`screenshot ${path}`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

/** Goes to a console page with the keyboard-reachable navigation link. */
async function navigate(page, label, url) {
  await page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name: label, exact: true }).focus();
  await Promise.all([page.waitForURL(url), page.keyboard.press('Enter')]);
}

const dir = mkdtempSync(join(tmpdir(), 'paywarden-chromium-'));
let failed = false;
const context = await chromium.launchPersistentContext(dir, {
  executablePath: CHROMIUM, headless: true, args: ARGS, acceptDownloads: true,
  viewport: { width: 1280, height: 900 }, timeout: 60_000,
  httpCredentials: { ...OPERATOR, origin: base },
});
context.setDefaultTimeout(20_000);
const page = context.pages()[0] ?? (await context.newPage());
try {
  if (phase === 'approve') {
    step('the console opens on the approval queue');
    const response = await page.goto(`${base}/console`);
    assert.equal(response.status(), 200);
    assert.equal(new URL(page.url()).pathname, '/console/approvals');
    const queue = await page.locator('main').innerText();
    assert.match(queue, /Queue: waiting for a decision/);
    assert.match(queue, /€750\.00/);
    await capture(page, 'console-approvals');
    passed++;

    step(`open ${approvalId} from the queue and approve it`);
    await page.getByRole('link', { name: approvalId }).first().click();
    await page.waitForURL(`${base}/approvals/${approvalId}`);
    const detail = await page.locator('main').innerText();
    for (const needed of [/What will move/, /€750\.00/, /Why it needs a person/, /Policy rule/,
      /paywarden-tests/, /The payment's history/, new RegExp(paymentId)]) {
      assert.match(detail, needed);
    }
    await capture(page, 'console-approval-pending');
    await page.getByLabel(/Note/).fill('customer called; approved from the console');
    const [posted] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${base}/approvals/${approvalId}/decision`),
      page.getByRole('button', { name: 'Approve', exact: true }).click(),
    ]);
    assert.equal(posted.status(), 303);
    await page.waitForURL(`${base}/approvals/${approvalId}`, { waitUntil: 'load' });
    assert.match(await page.locator('.decision').innerText(), /Approved by alice/i);
    await capture(page, 'console-approval-approved');
    passed++;
  } else {
    step('find the refund in the activity log, filtered by the payment');
    await page.goto(`${base}/console/approvals`);
    assert.match(await page.locator('main').innerText(), /Decided and expired/);
    await navigate(page, 'Activity', `${base}/console/activity`);
    assert.match(await page.locator('#chain').innerText(), /INTACT/i);
    await page.getByLabel('Payment or id').fill(paymentId);
    await Promise.all([page.waitForURL(/payment=/), page.getByRole('button', { name: 'Filter' }).click()]);
    const activity = await page.locator('#activity').innerText();
    assert.match(activity, /perform_refund/);
    assert.match(activity, /€750\.00/);
    await capture(page, 'console-activity');
    passed++;

    step("the payment's timeline shows the call, the approval and the receipt in order");
    await navigate(page, 'Timeline', `${base}/console/timeline`);
    await page.getByLabel(/Transaction, order or ifthenpay reference/).fill(paymentId);
    await Promise.all([page.waitForURL(/ref=/), page.getByRole('button', { name: 'Show timeline' }).click()]);
    const timeline = await page.locator('#timeline').innerText();
    const order = [/policy decision/, /approved by alice/, /executed/, /receipt issued rcpt_/].map((re) => timeline.search(re));
    assert.ok(order.every((i) => i >= 0), `the timeline misses an event: ${order}\n${timeline}`);
    assert.deepEqual([...order].sort((a, b) => a - b), order, `out of order:\n${timeline}`);
    assert.match(timeline, /€750\.00/);
    await capture(page, 'console-timeline');
    passed++;

    step('open the receipt and download it');
    await page.getByRole('link', { name: 'show and download the receipt' }).click();
    await page.waitForURL(`${base}/console/receipts/${receiptId}`);
    assert.match(await page.locator('main').innerText(), /Ed25519|Public key/);
    await capture(page, 'console-receipt');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('link', { name: 'Download receipt (JSON)' }).click(),
    ]);
    assert.equal(download.suggestedFilename(), `${receiptId}.json`);
    copyFileSync(await download.path(), downloadTo);
    step(`downloaded to ${downloadTo}`);
    await navigate(page, 'Receipts', `${base}/console/receipts`);
    assert.match(await page.locator('#receipts').innerText(), new RegExp(receiptId));
    await capture(page, 'console-receipts');
    passed++;

    step('the policy playground says which rule sends this refund to a person');
    await navigate(page, 'Policy', `${base}/console/policy`);
    await page.getByLabel('Amount', { exact: true }).fill('750.00');
    await Promise.all([page.waitForURL(`${base}/console/policy`), page.getByRole('button', { name: 'Evaluate' }).click()]);
    const result = await page.locator('#result').innerText();
    assert.match(result, /human/);
    assert.match(result, /Deciding rule/);
    await capture(page, 'console-policy');
    passed++;

    step('entities and settings show key ids, never keys');
    await navigate(page, 'Entities', `${base}/console/entities`);
    const entities = await page.locator('main').innerText();
    assert.match(entities, /Receipt signing/);
    assert.ok(!/sk_test_|alice-token/.test(entities), 'a secret is on the page');
    await capture(page, 'console-entities');
    passed++;
  }
} catch (error) {
  failed = true;
  console.error(`console browser test (${phase}) failed: ${error?.stack ?? error}`);
  await page.screenshot({ path: join(shots, `failure-${phase}.png`), fullPage: true }).catch(() => {});
} finally {
  await context.close();
  rmSync(dir, { recursive: true, force: true });
}
if (failed) process.exit(1);
console.log(`console browser test (${phase}): ${passed} passed, 0 failed`);

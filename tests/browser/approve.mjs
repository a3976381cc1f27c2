// End-to-end test of paywarden's operator approval page in headless Debian Chromium.
//
//   node tests/browser/approve.mjs BASE_URL APPROVE_ID DENY_ID
//
// BASE_URL serves `approvals_http::router` with operator alice (token "alice-token"), and
// APPROVE_ID and DENY_ID are pending approval requests. As a person would, the script signs in,
// opens the pending list, opens the first request, writes a note and clicks Approve, checks the
// result page says "approved" by alice; then denies the second the same way; then checks that a
// browser without credentials gets 401 and no approval data. Screenshots go to
// $PAYWARDEN_SCREENSHOT_DIR (default: the system temp dir). Driven by
// crates/paywarden/tests/approvals_browser.rs; set up with scripts/setup-browser.sh.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const OPERATOR = { username: 'alice', password: 'alice-token' };

const [base, approveId, denyId] = process.argv.slice(2);
if (!base || !approveId || !denyId) {
  console.error('usage: node tests/browser/approve.mjs BASE_URL APPROVE_ID DENY_ID');
  process.exit(2);
}
if (!existsSync(CHROMIUM)) {
  console.error(`${CHROMIUM} is missing; run scripts/setup-browser.sh`);
  process.exit(2);
}
const shots = process.env.PAYWARDEN_SCREENSHOT_DIR || tmpdir();
const profiles = [];

/** A fresh Chromium with its own new profile directory (--user-data-dir). */
async function browser(options = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'paywarden-chromium-'));
  profiles.push(dir);
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1100, height: 900 },
    timeout: 60_000,
    ...options,
  });
  context.setDefaultTimeout(20_000);
  const page = context.pages()[0] ?? (await context.newPage());
  return { context, page };
}

function step(text) {
  console.log(`- ${text}`);
}

/** Opens a pending request from the list, decides it with a note, checks the result page. */
async function decide(page, id, button, verb) {
  step(`open ${id} from the pending list`);
  let response = await page.goto(`${base}/approvals`);
  assert.equal(response.status(), 200, 'the pending list loads');
  const listShot = join(shots, `paywarden-approvals-list-before-${id}.png`);
  await page.screenshot({ path: listShot, fullPage: true });
  await page.getByRole('link', { name: id }).click();
  await page.waitForURL(`${base}/approvals/${id}`);
  const before = await page.locator('main').innerText();
  assert.match(before, /What will move/);
  assert.match(before, /PENDING/i);
  assert.match(before, /Full arguments/);
  const shot = join(shots, `paywarden-approval-${id}-pending.png`);
  await page.screenshot({ path: shot, fullPage: true });
  step(`screenshot of the pending page: ${shot}`);

  await page.getByLabel(/Note/).fill(`${verb} in the browser test`);
  step(`click ${button}`);
  const [posted] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${base}/approvals/${id}/decision`),
    page.getByRole('button', { name: button, exact: true }).click(),
  ]);
  assert.equal(posted.status(), 303, `the decision POST answers 303: ${await posted.text().catch(() => '')}`);
  await page.waitForURL(`${base}/approvals/${id}`, { waitUntil: 'load' });
  const decision = await page.locator('.decision').innerText();
  assert.match(decision, new RegExp(`${verb} by alice`, 'i'), `the page shows "${verb} by alice"`);
  assert.match(decision, new RegExp(`${verb} in the browser test`), 'the note is shown');
  assert.match(await page.locator('h1').innerText(), new RegExp(verb, 'i'));
  assert.equal(await page.getByRole('button', { name: button, exact: true }).count(), 0,
    'a decided request has no decision form');
  const after = join(shots, `paywarden-approval-${id}-${verb}.png`);
  await page.screenshot({ path: after, fullPage: true });
  step(`${id} shows "${verb}" by alice; screenshot: ${after}`);
}

let failed = false;
try {
  const signedIn = await browser({ httpCredentials: { ...OPERATOR, origin: base } });
  try {
    await decide(signedIn.page, approveId, 'Approve', 'approved');
    await decide(signedIn.page, denyId, 'Deny', 'denied');
    step('the pending list no longer shows them');
    await signedIn.page.goto(`${base}/approvals`);
    const list = await signedIn.page.locator('main').innerText();
    assert.ok(!list.includes(approveId) && !list.includes(denyId), list);
  } finally {
    await signedIn.context.close();
  }

  const anonymous = await browser();
  try {
    step('a browser without credentials gets 401 and no approval data');
    // Chromium answers the Basic challenge by asking for credentials; headless, with none to
    // give, the navigation ends in ERR_INVALID_AUTH_CREDENTIALS. The 401 response it got is
    // what matters.
    const url = `${base}/approvals/${approveId}`;
    const challenged = anonymous.page.waitForResponse((r) => r.url() === url);
    await anonymous.page.goto(url).catch((error) => {
      if (!/ERR_INVALID_AUTH_CREDENTIALS/.test(String(error))) throw error;
    });
    const response = await challenged;
    assert.equal(response.status(), 401);
    assert.equal(response.headers()['www-authenticate'], 'Basic realm="paywarden approvals"');
    // The same request from the browser's own HTTP stack, to read the 401 body.
    const fetched = await anonymous.context.request.get(url, { maxRedirects: 0 });
    assert.equal(fetched.status(), 401);
    const body = await fetched.text();
    assert.match(body, /sign-in required/i);
    assert.ok(!/What will move|alice|EUR|refund/.test(body), `the 401 page leaks data: ${body}`);
  } finally {
    await anonymous.context.close();
  }
} catch (error) {
  failed = true;
  console.error(`browser test failed: ${error?.stack ?? error}`);
} finally {
  for (const dir of profiles) rmSync(dir, { recursive: true, force: true });
}
if (failed) process.exit(1);
console.log('browser approval test: 3 passed, 0 failed');

// Browser test of the operator console: Debian's Chromium driven by
// playwright-core, finding controls by role and accessible name as a person
// would. Started by cmd/conversa's TestConsoleInBrowser, which runs the real
// server and talks to this script over stdin/stdout:
//   script -> "READY inbound"   : the list is open, post a customer message
//   test   -> "posted <name>"    : it was posted (the list must show it by itself)
// Environment: BASE_URL, KEY_A, KEY_B, CONV_B (a conversation of tenant B),
// CHROMIUM (path), SCREENSHOTS (a directory, optional).
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { test } from 'node:test';

const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOTS || '';
const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (l) => { const w = waiting.shift(); if (w) w(l); });
const nextLine = () => new Promise((resolve) => waiting.push(resolve));

async function shot(page, name) {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

async function signIn(page, key) {
  await page.goto(`${base}/console/`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('link', { name: 'Conversations' }).waitFor();
}

test('operator console', { timeout: 120_000 }, async (t) => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  t.after(() => browser.close());
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(20_000);
  page.on('console', (m) => { if (m.type() === 'error') console.error('browser:', m.text()); });
  page.on('pageerror', (e) => console.error('browser error:', e.message));

  await t.test('sign-in refuses a wrong key and keeps it out of the URL', async () => {
    await page.goto(`${base}/console/`);
    await shot(page, 'login');
    await page.getByLabel('API key').fill('cvk_not_a_key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That API key is not valid').waitFor();
    assert.ok(!page.url().includes('cvk_'), 'the key is never in a URL');
  });

  await t.test('sign in with the tenant API key', async () => {
    await signIn(page, process.env.KEY_A);
    const cookies = await ctx.cookies();
    const session = cookies.find((c) => c.name === 'conversa_console');
    assert.ok(session, 'a session cookie is set');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Lax');
    assert.ok(!cookies.some((c) => c.value.includes(process.env.KEY_A)), 'the key is not in a cookie');
    assert.equal(await page.evaluate(() => document.cookie), '', 'scripts read no cookie');
  });

  let convURL;
  await t.test('a new conversation appears in the list without a reload', async () => {
    await page.goto(`${base}/console/conversations`);
    await page.getByRole('heading', { name: 'Conversations' }).waitFor();
    // A reload would drop this mark; an in-place update keeps it.
    await page.evaluate(() => { window.stillThisPage = true; });
    console.log('READY inbound');
    const name = (await nextLine()).replace(/^posted /, '');
    const link = page.getByRole('link', { name });
    await link.waitFor();
    assert.equal(await page.evaluate(() => window.stillThisPage), true, 'the list updated in place, without a reload');
    await page.getByRole('cell', { name: /Monday to Friday/ }).waitFor(); // the bot's reply is the last message
    await shot(page, 'conversations');
    await link.click();
    await page.getByRole('heading', { name: new RegExp(name) }).waitFor();
    convURL = page.url();
  });

  await t.test('take over, reply once on a double click, see it in the list', async () => {
    await page.getByRole('button', { name: 'Take over' }).click();
    await page.getByRole('button', { name: 'Hand back to bot' }).waitFor();
    await page.getByLabel('Reply').fill('A person here: we can also meet on Saturday.');
    await page.getByRole('button', { name: 'Send' }).dblclick();
    await page.locator('li', { hasText: 'A person here: we can also meet on Saturday.' }).getByText(/^Person/).waitFor();
    await page.locator('li', { hasText: 'A person here' }).getByText('delivered').waitFor();
    await page.getByRole('link', { name: 'Conversations' }).click();
    await page.getByRole('cell', { name: /A person here/ }).waitFor();
    await page.goto(convURL);
  });

  await t.test('sending nothing is refused with the reason, and nothing is sent', async () => {
    await page.getByLabel('Reply').fill('   ');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.getByRole('alert').filter({ hasText: 'body is required' }).waitFor();
  });

  await t.test('hand back to the bot', async () => {
    await page.goto(convURL);
    await page.getByRole('button', { name: 'Hand back to bot' }).click();
    await page.getByRole('button', { name: 'Take over' }).waitFor();
  });

  await t.test('open a message trace', async () => {
    const bot = page.locator('li', { hasText: 'Monday to Friday' });
    await bot.getByRole('link', { name: /^Trace of message/ }).click();
    const trace = page.locator('#trace');
    await trace.getByRole('heading', { name: /Trace of message/ }).waitFor();
    await trace.getByText(/Agent assistant chosen by/).first().waitFor();
    await trace.getByText(/Twilio accepted/).first().waitFor();
    await trace.getByText('Twilio reported delivered').first().waitFor();
    assert.equal(page.url(), convURL, 'the trace opens beside the conversation');
    await shot(page, 'conversation');
  });

  await t.test('edit an agent; a bad field is shown at the field and nothing is saved', async () => {
    await page.getByRole('link', { name: 'Agents' }).click();
    await page.getByRole('link', { name: 'assistant' }).click();
    await page.getByLabel('Keywords').fill('billing, invoice');
    const faq = page.getByLabel('FAQ');
    const before = await faq.inputValue();
    await faq.fill(before + '\nrefund, money back | Refunds take 5 days.');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    assert.equal(await page.getByLabel('Keywords').inputValue(), 'billing, invoice');
    assert.match(await page.getByLabel('FAQ').inputValue(), /refund, money back \| Refunds take 5 days\./);
    await shot(page, 'agent');

    await page.getByLabel('Model').fill('m'.repeat(201));
    await page.getByLabel('Keywords').fill('changed');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('alert').filter({ hasText: 'model is longer than 200 characters' }).waitFor();
    assert.equal(await page.getByLabel('Model').getAttribute('aria-invalid'), 'true');
    await page.goto(page.url());
    assert.equal(await page.getByLabel('Keywords').inputValue(), 'billing, invoice', 'nothing was written');
  });

  await t.test('usage shows the balance and a chart of replies', async () => {
    await page.getByRole('link', { name: 'Usage' }).click();
    await page.getByText(/Balance:/).waitFor();
    await page.getByRole('img', { name: 'Replies per day' }).waitFor();
    await shot(page, 'usage');
  });

  await t.test("another tenant's conversation is 404, both ways", async () => {
    const resp = await page.goto(`${base}/console/conversations/${process.env.CONV_B}`);
    assert.equal(resp.status(), 404);
    await page.getByText('belongs to another tenant').waitFor();
    assert.equal((await page.goto(`${base}/console/messages/999999999/trace`)).status(), 404);

    const other = await (await browser.newContext()).newPage();
    await signIn(other, process.env.KEY_B);
    await other.getByRole('link', { name: /Customer|B Customer/ }).first().waitFor();
    const r = await other.goto(convURL);
    assert.equal(r.status(), 404);
    await other.close();
  });

  await t.test('sign out ends the session', async () => {
    await page.goto(`${base}/console/conversations`);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API key').waitFor();
    await page.goto(convURL);
    await page.getByLabel('API key').waitFor();
  });
  lines.close();
});

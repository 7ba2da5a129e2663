// Headless Chromium (Debian's, at /usr/bin/chromium) driven by playwright-core, and a
// page object for Warren's web client that speaks in what a user does and sees.

import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.WARREN_CHROMIUM ?? '/usr/bin/chromium';

/** Each launch gets a fresh temporary profile, removed again on close. */
export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

const id = (testid) => `[data-testid="${testid}"]`;

/** One user in one browser context, on one gateway. */
export class ChatPage {
  /** Opens `baseUrl` in a new context of `browser` and signs in as `name`. */
  static async open(browser, baseUrl, name) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    const chat = new ChatPage(page, name);
    page.on('pageerror', (e) => chat.errors.push(e.message));
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) chat.errors.push(m.text());
    });
    page.on('websocket', (ws) => {
      chat.socketUrls.push(ws.url());
      ws.on('framesent', ({ payload }) => chat.sent.push(JSON.parse(payload)));
    });
    await page.goto(baseUrl);
    await page.locator(id('signin-name')).fill(name);
    await page.locator(id('signin-submit')).click();
    await chat.waitForState('online');
    return chat;
  }

  constructor(page, name) {
    this.page = page;
    this.name = name;
    /** Uncaught script errors and Content-Security-Policy violations on the page. */
    this.errors = [];
    /** Every frame the page sent on any of its WebSockets, parsed, in order. */
    this.sent = [];
    /** The URL of every WebSocket the page opened. */
    this.socketUrls = [];
  }

  /** The user id shown from `welcome`. */
  userId() {
    return this.page.locator(id('me')).getAttribute('data-user');
  }

  connectionState() {
    return this.page.locator(id('conn-state')).getAttribute('data-state');
  }

  waitForState(state, timeout = 20_000) {
    return this.page.locator(`${id('conn-state')}[data-state="${state}"]`).waitFor({ timeout });
  }

  /** Records every value the connection badge's data-state takes from now on. */
  recordStates() {
    return this.page.evaluate(() => {
      const badge = document.querySelector('[data-testid="conn-state"]');
      const seen = [badge.dataset.state];
      window.__connectionStates = seen;
      new MutationObserver(() => {
        if (seen.at(-1) !== badge.dataset.state) seen.push(badge.dataset.state);
      }).observe(badge, { attributes: true, attributeFilter: ['data-state'] });
    });
  }

  recordedStates() {
    return this.page.evaluate(() => window.__connectionStates);
  }

  async join(room) {
    await this.page.locator(id('join-room')).fill(room);
    await this.page.locator(id('join-room')).press('Enter');
    await this.page.locator(`${id('room-item')}[data-room="${room}"][data-joined="true"]`).waitFor();
  }

  open(room) {
    return this.page.locator(`${id('room-item')}[data-room="${room}"]`).click();
  }

  /** Types and sends with Enter, then waits until the server has acknowledged it. */
  async send(text) {
    const input = this.page.locator(id('composer-input'));
    await input.fill(text);
    await input.press('Enter');
    await this.page.waitForFunction(
      (t) =>
        ![...document.querySelectorAll('[data-testid="message-pending"] .text')].some((e) => e.textContent === t) &&
        [...document.querySelectorAll('[data-testid="message-text"]')].some((e) => e.textContent === t),
      text,
    );
  }

  /** The texts of the open room's messages, top to bottom. */
  texts() {
    return this.page.locator(id('message-text')).allTextContents();
  }

  /** The open room's messages as {id, seq, text}. */
  messages() {
    return this.page.locator(id('message')).evaluateAll((rows) =>
      rows.map((r) => ({
        id: r.dataset.id,
        seq: Number(r.dataset.seq),
        text: r.querySelector('[data-testid="message-text"]').textContent,
      })),
    );
  }

  waitForText(text, timeout = 15_000) {
    return this.page
      .locator(id('message-text'), { hasText: text })
      .filter({ hasText: new RegExp(`^${escapeRegExp(text)}$`) })
      .first()
      .waitFor({ timeout });
  }

  /** Waits until the open room holds at least `count` messages. */
  waitForCount(count, timeout = 20_000) {
    return this.page.waitForFunction(
      (n) => document.querySelectorAll('[data-testid="message"]').length >= n,
      count,
      { timeout },
    );
  }

  async screenshot(path) {
    await this.page.screenshot({ path, fullPage: true });
    return path;
  }
}

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

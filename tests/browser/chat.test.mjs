// Warren's web client end to end: real gateway and dispatcher processes, real RabbitMQ
// and Redis, two headless-Chromium pages on two different gateways.
//
// Needs target/debug/warren-{gateway,dispatcher} (scripts/test-browser.sh runs after
// the build). Run alone with: node --test tests/browser/

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { Stack, LOGS, ROOT } from './support/stack.mjs';
import { launch, ChatPage } from './support/browser.mjs';

const ROOM = 'lobby';

describe('the web client on two gateways', { timeout: 240_000 }, () => {
  let stack;
  let browser;
  /** Alice on gateway 0, Bob on gateway 1. */
  let a;
  let b;
  /** A token minted by gateway 1's `POST /dev/token`, for Carol. */
  let carolToken;

  before(async () => {
    stack = await Stack.start({ gateways: 2 });
    browser = await launch();
    a = await ChatPage.open(browser, stack.url(0), 'Alice Web');
    b = await ChatPage.open(browser, stack.url(1), 'Bob Web');
  });

  after(async () => {
    try {
      if (stack) {
        const dir = join(LOGS, 'screenshots');
        mkdirSync(dir, { recursive: true });
        for (const [who, page] of [['a', a], ['b', b]]) {
          if (!page) continue;
          await page.open(ROOM).catch(() => {}); // the room the test is about, if it got that far
          const path = await page.screenshot(join(dir, `${stack.prefix}-${who}.png`)).catch((e) => `not written: ${e.message}`);
          console.log(`screenshot of page ${who.toUpperCase()} (${page.name}): ${path}`);
        }
      }
      await browser?.close();
    } finally {
      await stack?.stop();
    }
  });

  it('serves the page with its content types and a strict security policy', async () => {
    const page = await fetch(stack.url(0));
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type'), /^text\/html/);
    assert.equal(page.headers.get('cache-control'), 'no-cache');
    const csp = page.headers.get('content-security-policy');
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /connect-src 'self' ws: wss:/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    const script = await fetch(`${stack.url(0)}/chat.js`);
    assert.match(script.headers.get('content-type'), /^text\/javascript/);
    const missing = await fetch(`${stack.url(0)}/nope.js`);
    assert.equal(missing.status, 404);

    const form = await fetch(`${stack.url(1)}/dev/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=Carol+Form',
    });
    assert.equal(form.status, 200);
    const minted = await form.json();
    assert.equal(minted.user.id, 'carol-form');
    assert.equal(typeof minted.token, 'string');
    carolToken = minted.token;
  });

  it('signs both users in and shows who they are', async () => {
    assert.equal(await a.userId(), 'alice-web');
    assert.equal(await b.userId(), 'bob-web');
    assert.equal(await a.connectionState(), 'online');
    assert.equal(await b.connectionState(), 'online');
  });

  it('agrees permessage-deflate with the gateway, as WebSocket.extensions shows', async () => {
    const badge = '[data-testid="conn-state"]';
    for (const page of [a, b]) {
      const agreed = await page.page.locator(badge).getAttribute('data-extensions');
      assert.match(agreed, /^permessage-deflate/, `${page.name}: ${agreed}`);
      assert.match(agreed, /server_no_context_takeover/);
    }
    // And straight from a WebSocket the page opens itself (its token in the cookie, as
    // the client sends it).
    const extensions = await a.page.evaluate(async () => {
      const token = encodeURIComponent(sessionStorage.getItem('warren.token'));
      document.cookie = `warren_token=${token}; Path=/ws; Max-Age=60; SameSite=Strict`;
      const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/ws`);
      return new Promise((resolve, reject) => {
        ws.onopen = () => { resolve(ws.extensions); ws.close(); };
        ws.onerror = () => reject(new Error('no connection'));
      });
    });
    assert.match(extensions, /^permessage-deflate/);
  });

  it('signs in with a pasted token, on another gateway than the one that minted it', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(stack.url(0));
      await page.locator('[data-testid="signin-view"] summary').click();
      await page.locator('[data-testid="signin-token"]').fill(carolToken);
      await page.locator('[data-testid="signin-submit"]').click();
      await page.locator('[data-testid="conn-state"][data-state="online"]').waitFor();
      assert.equal(await page.locator('[data-testid="me"]').getAttribute('data-user'), 'carol-form');
      assert.equal(await page.locator('[data-testid="me"]').textContent(), 'Carol Form');
    } finally {
      await context.close();
    }
  });

  it('carries messages both ways between pages on two gateways', async () => {
    await a.join(ROOM);
    await b.join(ROOM);
    await a.send('hello from A');
    await b.waitForText('hello from A');
    await b.send('hello from B');
    await a.waitForText('hello from B');
    assert.deepEqual(await a.texts(), ['hello from A', 'hello from B']);
    assert.deepEqual(await b.texts(), ['hello from A', 'hello from B']);
  });

  it('shows presence, typing, and moderation buttons only to the owner', async () => {
    await a.page.locator('[data-testid="member"][data-user="bob-web"]').waitFor();
    await b.page.locator('[data-testid="member"][data-user="alice-web"]').waitFor();

    const sentBefore = a.sent.length;
    await a.page.locator('[data-testid="composer-input"]').pressSequentially('typing…', { delay: 20 });
    await b.page.locator('[data-testid="typing"]', { hasText: 'Alice Web is typing' }).waitFor();
    await a.page.locator('[data-testid="composer-input"]').fill('');
    // Eight keystrokes within half a second: one `typing` frame.
    assert.deepEqual(a.sent.slice(sentBefore).filter((f) => f.type === 'typing'), [{ type: 'typing', room: ROOM }]);
    // It disappears after a few seconds without news.
    await b.page.waitForFunction(() => document.querySelector('[data-testid="typing"]').textContent === '', null, {
      timeout: 8_000,
    });

    // Alice created the room, so she owns it.
    assert.equal(await a.page.locator('[data-testid="room-role"]').textContent(), 'owner');
    await a.page.locator('[data-testid="member"][data-user="bob-web"] [data-testid="mod-kick"]').waitFor();
    assert.equal(await b.page.locator('[data-testid="mod-kick"], [data-testid="message-delete"]').count(), 0);
  });

  it('reconnects a page whose gateway restarts and shows what it missed, once, in order', async () => {
    const before = await b.messages();
    await b.recordStates();
    const sentBefore = b.sent.length;

    const stopped = stack.stopGateway(1);
    await b.page.waitForFunction(() => window.__connectionStates.includes('reconnecting'), null, { timeout: 15_000 });
    await stopped;
    for (const n of [1, 2, 3]) await a.send(`missed ${n}`);
    await stack.restartGateway(1);
    await b.waitForState('online', 30_000);
    await b.waitForCount(before.length + 3);
    await sleep(1_000); // room for a duplicate to show up, if one were coming

    const states = await b.recordedStates();
    assert.ok(states.includes('reconnecting'), `states seen: ${states.join(' → ')}`);
    assert.equal(states.at(-1), 'online');
    assert.ok(Number(await b.page.locator('[data-testid="conn-state"]').getAttribute('data-reconnects')) >= 1);

    // The rejoin asked for what came after the last seq it had, in the same epoch.
    const rejoin = b.sent.slice(sentBefore).find((f) => f.type === 'join' && f.room === ROOM);
    assert.ok(rejoin, 'page B rejoined the room');
    assert.equal(rejoin.since, before.at(-1).seq);
    assert.equal(typeof rejoin.epoch, 'string');

    const after = await b.messages();
    assert.deepEqual(
      after.map((m) => m.text),
      ['hello from A', 'hello from B', 'missed 1', 'missed 2', 'missed 3'],
    );
    assert.equal(new Set(after.map((m) => m.id)).size, after.length, 'no message twice');
    after.slice(1).forEach((m, i) => assert.ok(m.seq > after[i].seq, 'ascending seq'));

    // The page still works on the new connection.
    await b.send('back again');
    await a.waitForText('back again');
  });

  it('keeps a message written while its gateway is down and sends it, once, when the page is back', async () => {
    await b.open(ROOM);
    const sentBefore = b.sent.length;
    const stopped = stack.stopGateway(1);
    await b.page.waitForFunction(
      () => document.querySelector('[data-testid="conn-state"]').dataset.state !== 'online',
      null,
      { timeout: 15_000 },
    );
    await stopped;
    const input = b.page.locator('[data-testid="composer-input"]');
    await input.fill('written offline');
    await input.press('Enter');
    await b.page.locator('[data-testid="message-pending"]', { hasText: 'written offline' }).waitFor();

    await stack.restartGateway(1);
    await b.waitForState('online', 30_000);
    await a.waitForText('written offline');
    await b.page.locator('[data-testid="message-pending"]', { hasText: 'written offline' }).waitFor({ state: 'detached' });
    await b.waitForText('written offline');
    await sleep(500); // room for a duplicate to show up, if one were coming
    for (const page of [a, b]) {
      assert.equal((await page.texts()).filter((t) => t === 'written offline').length, 1, page.name);
    }
    // It went out on the new connection only, after the rejoin.
    const frames = b.sent.slice(sentBefore);
    const sends = frames.filter((f) => f.type === 'send' && f.text === 'written offline');
    assert.equal(sends.length, 1);
    const rejoin = frames.findIndex((f) => f.type === 'join' && f.room === ROOM);
    assert.ok(rejoin >= 0 && rejoin < frames.indexOf(sends[0]), 'rejoined before sending');
  });

  it('serves the client library the page uses, as clients/js/ has it', async () => {
    for (const file of ['warren.js', 'warren-order.js']) {
      const served = await fetch(`${stack.url(0)}/${file}`);
      assert.match(served.headers.get('content-type'), /^text\/javascript/);
      assert.equal(await served.text(), readFileSync(join(ROOT, 'clients', 'js', file), 'utf8'), file);
    }
    const chat = await (await fetch(`${stack.url(0)}/chat.js`)).text();
    assert.match(chat, /^import \{ WarrenClient \} from '\.\/warren\.js';$/m);
    assert.equal((await fetch(`${stack.url(0)}/connection.js`)).status, 404);
  });

  it('opens a direct conversation on both sides', async () => {
    const dm = 'dm:alice-web:bob-web';
    await a.page.locator('[data-testid="dm-user"]').fill('bob-web');
    await a.page.locator('[data-testid="dm-user"]').press('Enter');
    await a.page.locator(`[data-testid="room-item"][data-room="${dm}"][data-active="true"]`).waitFor();
    await a.send('psst, Bob');
    assert.deepEqual(a.sent.filter((f) => f.type === 'dm').map(({ to, text }) => ({ to, text })), [
      { to: 'bob-web', text: 'psst, Bob' },
    ]);

    // Bob has not joined the dm room: it appears anyway, and opening it loads its history.
    const item = b.page.locator(`[data-testid="room-item"][data-room="${dm}"]`);
    await item.waitFor();
    await item.click();
    await b.page.locator(`[data-testid="room-item"][data-room="${dm}"][data-joined="true"]`).waitFor();
    await b.waitForText('psst, Bob');
    await sleep(500);
    assert.deepEqual(await b.texts(), ['psst, Bob']);
  });

  it('sends moderation frames from the owner\'s buttons and shows what they did', async () => {
    await a.open(ROOM);
    await b.open(ROOM);
    await a.page.locator('[data-testid="member"][data-user="bob-web"] [data-testid="mod-mute"]').click();
    const mute = await waitForFrame(a, (f) => f.type === 'moderate' && f.action === 'mute');
    assert.deepEqual({ ...mute, ref: typeof mute.ref }, {
      type: 'moderate',
      room: ROOM,
      action: 'mute',
      user: 'bob-web',
      duration_s: 60,
      ref: 'string',
    });
    await b.page.locator('[data-testid="system-line"]', { hasText: 'muted Bob Web' }).waitFor();

    // Bob's next message is refused, and says why, next to the message.
    await b.page.locator('[data-testid="composer-input"]').fill('can I still talk?');
    await b.page.locator('[data-testid="composer-input"]').press('Enter');
    await b.page.locator('[data-testid="message-pending"] [data-testid="pending-error"][data-code="muted"]').waitFor();

    // Alice deletes Bob's last message: gone on both pages.
    const row = a.page.locator('[data-testid="message"]', { hasText: 'back again' });
    const id = await row.getAttribute('data-id');
    await row.hover();
    await row.locator('[data-testid="message-delete"]').click();
    const del = await waitForFrame(a, (f) => f.type === 'moderate' && f.action === 'delete');
    assert.equal(del.msg_id, id);
    for (const page of [a, b]) {
      await page.page.locator(`[data-testid="message"][data-id="${id}"]`).waitFor({ state: 'detached' });
    }
  });

  it('keeps the token out of every URL it opens (it goes in a cookie for /ws)', () => {
    for (const page of [a, b]) {
      assert.ok(page.socketUrls.length > 0, `${page.name} opened no WebSocket`);
      for (const url of page.socketUrls) {
        assert.doesNotMatch(url, /token=/, `${page.name}: ${url}`);
        assert.match(url, /\/ws$/, `${page.name}: ${url}`);
      }
    }
  });

  it('raised no script errors and broke no security policy', () => {
    assert.deepEqual(a.errors, []);
    assert.deepEqual(b.errors, []);
  });
});

async function waitForFrame(page, match, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const frame = page.sent.find(match);
    if (frame) return frame;
    await sleep(50);
  }
  throw new Error('the expected frame was not sent');
}

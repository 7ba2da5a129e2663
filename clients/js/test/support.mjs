// What the client's tests share: a stack whose token secret they know (so a test can
// mint a token that expires in seconds), a WebSocket that records and can lose frames
// (the faults a real network causes, placed exactly), and bounded waiting.

import { createHmac, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

export { Stack } from '../../../tests/browser/support/stack.mjs';

export const SECRET = randomBytes(24).toString('hex');

/** Every stack of these tests: tokens expire on the second (no leeway). */
export const STACK_OPTIONS = { gateways: 2, secret: SECRET, tag: 'wj', env: { WARREN__AUTH__LEEWAY_S: '0' } };

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT for `sub`, valid for `ttlS` seconds, signed with the stack's secret. */
export function mintToken(sub, ttlS = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub, name: sub, iat: now, exp: now + ttlS }));
  const signature = createHmac('sha256', SECRET).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

/**
 * A WebSocket constructor for the client that records every frame, in and out, of all
 * the sockets it opens (`log.sent`, `log.received`, each frame with its socket's number),
 * and passes an incoming frame on only if `drop(frame, socketNumber)` is false, twice
 * if `twice(frame)` is true.
 */
export function recordingSocket({ drop = () => false, twice = () => false } = {}) {
  const log = { sent: [], received: [], sockets: 0 };
  class RecordingSocket {
    constructor(url, protocols) {
      this.number = (log.sockets += 1);
      this.inner = new WebSocket(url, protocols);
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      this.inner.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        log.received.push({ socket: this.number, frame });
        if (drop(frame, this.number)) return;
        this.onmessage?.(event);
        if (twice(frame)) this.onmessage?.(event);
      };
      this.inner.onclose = (event) => this.onclose?.(event);
      this.inner.onerror = (event) => this.onerror?.(event);
    }

    get readyState() {
      return this.inner.readyState;
    }

    get extensions() {
      return this.inner.extensions;
    }

    send(data) {
      log.sent.push({ socket: this.number, frame: JSON.parse(data) });
      this.inner.send(data);
    }

    close(code, reason) {
      this.inner.close(code, reason);
    }
  }
  return { WebSocket: RecordingSocket, log };
}

/** Polls `check` until it returns something truthy; throws after `ms`. */
export async function waitFor(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const value = await check();
    if (value) return value;
    await sleep(25);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** The next event `type` of `client` that `match` accepts, within `ms`. */
export function nextEvent(client, type, match = () => true, ms = 20_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`timed out after ${ms} ms waiting for a ${type} event`));
    }, ms);
    const stop = client.on(type, (detail) => {
      if (!match(detail)) return;
      clearTimeout(timer);
      stop();
      resolve(detail);
    });
  });
}

/** Collects the messages a client delivers for `room`, in delivery order. */
export function collect(client, room) {
  const messages = [];
  client.on('message', (m) => {
    if (m.room === room) messages.push(m);
  });
  return messages;
}

/** Fast reconnects for tests: a gateway that comes back is found within a second or so. */
export const QUICK = { backoff: { baseMs: 100, capMs: 1_000 } };

/** `promise`, or a rejection naming `what` if it takes longer than `ms`. */
export function within(what, promise, ms = 20_000) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

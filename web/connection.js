// One WebSocket to the gateway, kept open. Between attempts it waits with exponential
// backoff and full jitter (so a thousand tabs whose gateway restarted do not come back
// in the same second); a heartbeat notices a link that died without a close; and it
// reports a state the page shows: connecting, online, reconnecting (with when), offline.

const SUBPROTOCOL = 'warren.v1';
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10_000;
/** A socket that opened but sent no `welcome` within this is given up. */
const WELCOME_TIMEOUT_MS = 10_000;
/** How often a `ping` goes out; a ping unanswered by any frame for PING_GRACE_MS is a dead link. */
const PING_EVERY_MS = 20_000;
const PING_GRACE_MS = 10_000;

/** Close codes after which reconnecting cannot help, with what the user is told. */
const FINAL = new Map([
  [1000, 'disconnected'],
  [1008, 'refused by the server (policy)'],
  [4401, 'session expired'],
]);

/** Our own close code for a link we gave up on (4000-4999 are free for applications). */
const GAVE_UP = 4000;

export class Connection {
  #url;
  #onFrame;
  #onState;
  #diagnose;
  #ws = null;
  #welcomed = false;
  #everWelcomed = false;
  #attempt = 0;
  #retryTimer = null;
  #welcomeTimer = null;
  #heartbeat = null;
  #lastRx = 0;
  #pingSentAt = 0;
  #stopped = true;

  /**
   * url: () => string, called before each attempt; onFrame(frame) for every server frame;
   * onState(state) on every change; diagnose(): Promise<string|null>, asked after an
   * attempt that failed before `welcome`, returns a reason when retrying is pointless.
   */
  constructor({ url, onFrame, onState, diagnose }) {
    this.#url = url;
    this.#onFrame = onFrame;
    this.#onState = onState;
    this.#diagnose = diagnose;
    this.state = { name: 'offline', retryAt: 0, reason: '', reconnects: 0, extensions: '' };
    window.addEventListener('online', () => this.retryNow());
  }

  start() {
    this.#stopped = false;
    this.#attempt = 0;
    this.#open();
  }

  /** Closes for good (1000). */
  stop(reason = 'signed out') {
    this.#stopped = true;
    this.#clearTimers();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      detach(ws);
      ws.close(1000);
    }
    this.#set({ name: 'offline', reason });
  }

  /** Drops the current socket as if it had gone quiet: the usual backoff and retry follow. */
  drop() {
    if (this.#ws) this.#giveUp(this.#ws);
  }

  /** Skips the rest of the backoff. */
  retryNow() {
    if (this.state.name !== 'reconnecting') return;
    clearTimeout(this.#retryTimer);
    this.#open();
  }

  /** Sends a frame if the link is up and greeted; false otherwise. */
  send(frame) {
    if (!this.#welcomed || this.#ws?.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  #open() {
    this.#clearTimers();
    this.#welcomed = false;
    this.#set({ name: 'connecting', retryAt: 0, reason: '' });
    let ws;
    try {
      ws = new WebSocket(this.#url(), SUBPROTOCOL);
    } catch (e) {
      this.#set({ name: 'offline', reason: `cannot connect: ${e.message}` });
      return;
    }
    this.#ws = ws;
    ws.onmessage = (event) => this.#received(ws, event.data);
    ws.onclose = (event) => this.#closed(ws, event.code);
    this.#welcomeTimer = setTimeout(() => this.#giveUp(ws), WELCOME_TIMEOUT_MS);
  }

  #received(ws, data) {
    if (ws !== this.#ws) return;
    this.#lastRx = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === 'welcome') {
      clearTimeout(this.#welcomeTimer);
      this.#welcomed = true;
      this.#attempt = 0;
      const reconnects = this.state.reconnects + (this.#everWelcomed ? 1 : 0);
      this.#everWelcomed = true;
      this.#pingSentAt = 0;
      this.#heartbeat = setInterval(() => this.#beat(ws), PING_EVERY_MS);
      // Online before the frame is handled, so the rejoins it triggers can be sent.
      // `extensions` is what the gateway agreed, e.g. permessage-deflate (compression).
      this.#set({ name: 'online', reason: '', reconnects, extensions: ws.extensions });
    }
    this.#onFrame(frame);
  }

  #beat(ws) {
    const unanswered = this.#pingSentAt && this.#lastRx < this.#pingSentAt;
    if (unanswered && Date.now() - this.#pingSentAt > PING_GRACE_MS) {
      this.#giveUp(ws);
      return;
    }
    if (!unanswered) {
      this.#pingSentAt = Date.now();
      this.send({ type: 'ping' });
    }
  }

  /** Abandons a socket that stopped answering, without waiting for its close. */
  #giveUp(ws) {
    if (ws !== this.#ws) return;
    detach(ws);
    try {
      ws.close(GAVE_UP, 'no answer');
    } catch {
      // Already closing.
    }
    this.#closed(ws, GAVE_UP);
  }

  #closed(ws, code) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    const wasWelcomed = this.#welcomed;
    this.#welcomed = false;
    this.#clearTimers();
    if (this.#stopped) return;
    if (FINAL.has(code)) {
      this.#set({ name: 'offline', reason: FINAL.get(code) });
      return;
    }
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.#attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.#attempt += 1;
    this.#retryTimer = setTimeout(() => this.#open(), delay);
    this.#set({ name: 'reconnecting', retryAt: Date.now() + delay, reason: `closed (${code})` });
    if (!wasWelcomed && this.#diagnose) this.#askWhy();
  }

  /** The handshake failed: a browser cannot see why, so ask over plain HTTP. */
  async #askWhy() {
    const reason = await this.#diagnose().catch(() => null);
    if (reason && this.state.name === 'reconnecting') {
      this.#stopped = true;
      this.#clearTimers();
      this.#set({ name: 'offline', reason });
    }
  }

  #clearTimers() {
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#welcomeTimer);
    clearInterval(this.#heartbeat);
  }

  #set(changes) {
    this.state = { ...this.state, ...changes };
    this.#onState(this.state);
  }
}

function detach(ws) {
  ws.onmessage = null;
  ws.onclose = null;
}

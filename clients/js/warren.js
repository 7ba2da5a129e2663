// Warren's JavaScript client: one WebSocket to a gateway, kept open, with the protocol's
// promises kept for the application (docs/PROTOCOL.md, docs/CLIENTS.md).
//
// - Connects with a token, or a function asked for a fresh one before every attempt
//   (and so again after the gateway closes an expired session with 4401).
// - Reconnects with capped exponential backoff and full jitter, so a thousand clients of
//   a gateway that restarted do not come back in the same second; stops for good after
//   the close codes that say retrying cannot help.
// - Rejoins every joined room with `since` and `epoch`, and tells the application
//   whether the server could recover what was missed or the history was reset.
// - Keeps every `send`/`dm` until its `ack` or `error`, and after a reconnect sends the
//   unanswered ones again with the same `ref`: the dispatcher stores each
//   (room, user, ref) once and answers a repeat with the first `ack`.
// - Delivers each room's messages once and in `seq` order: duplicates are dropped and a
//   gap is filled from `history` before anything newer is delivered.
//
// No dependencies and no build step: an ES module for browsers and Node >= 20 (whose
// WebSocket is global from Node 22, or with --experimental-websocket on Node 20; any
// WHATWG-compatible constructor can be passed as `WebSocket`).

import { RoomOrder } from './warren-order.js';

/** The subprotocol offered in the handshake. */
export const SUBPROTOCOL = 'warren.v1';

/**
 * Close codes after which the client stops instead of reconnecting: the server said
 * this client must change (a protocol error, a frame it refused) or may not come back
 * (1008: banned everywhere, or too many bad frames). 1000 is a close someone chose.
 */
export const FINAL_CLOSE_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009]);

/** The gateway closes with this when the token expires during a connection. */
export const TOKEN_EXPIRED = 4401;

/** Our own close code for a socket we gave up on (4000-4999 belong to applications). */
const GAVE_UP = 4000;

/** Frames that may be sent again, same `ref`, on the next connection. */
const REPEATABLE = new Set(['send', 'dm', 'history', 'presence']);

const DEFAULTS = {
  backoff: { baseMs: 500, capMs: 10_000 },
  welcomeTimeoutMs: 10_000,
  pingEveryMs: 20_000,
  pingGraceMs: 10_000,
};

/** An `error` answer from the server, or a request the client gave up on. */
export class WarrenError extends Error {
  /**
   * @param {string} code the server's code (`forbidden`, `muted`, ...), or `disconnected`
   *   / `closed` when the client gave the request up
   * @param {string} message
   * @param {object} [frame] the `error` frame, when the server sent one
   */
  constructor(code, message, frame) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'WarrenError';
    this.code = code;
    this.ref = frame?.ref;
    this.frame = frame;
  }
}

/**
 * The wait before reconnect attempt `attempt` (0 for the first): a uniformly random
 * time between 0 and min(cap, base * 2^attempt) ("full jitter").
 */
export function backoffDelay(attempt, { baseMs, capMs }, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** A ref unique across tabs, processes and reloads (the dispatcher dedups on it). */
function refMaker() {
  const bytes = new Uint8Array(6);
  globalThis.crypto.getRandomValues(bytes);
  const prefix = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  let counter = 0;
  return () => `${prefix}-${Date.now().toString(36)}-${(counter += 1)}`;
}

export class WarrenClient {
  #options;
  #WebSocket;
  #newRef = refMaker();
  #listeners = new Map();
  #ws = null;
  #welcomed = false;
  #stopped = true;
  #attempt = 0;
  #generation = 0;
  /** Counts attempts, so an attempt overtaken while it awaited its token gives way. */
  #opens = 0;
  #timers = { retry: null, welcome: null, heartbeat: null };
  #lastRx = 0;
  #pingSentAt = 0;
  /** ref -> {frame, resolve, reject, sentOn}: every request waiting for its answer. */
  #pending = new Map();
  /** room -> {order: RoomOrder, joinRef}: the rooms to keep joined. */
  #rooms = new Map();

  /**
   * @param {object} options
   * @param {string | ((token: string) => string | Promise<string>)} options.url the
   *   gateway's `/ws` URL; a string gets `?token=` appended, a function builds the URL
   *   itself (a page on the gateway's origin sets the `warren_token` cookie instead)
   * @param {string | (() => string | Promise<string>)} [options.token] the JWT, or a
   *   function called before every connection attempt
   * @param {typeof WebSocket} [options.WebSocket] defaults to `globalThis.WebSocket`
   * @param {{baseMs?: number, capMs?: number}} [options.backoff]
   * @param {() => Promise<string | null>} [options.diagnose] asked after an attempt that
   *   failed before `welcome` (a browser cannot see the HTTP status); a reason stops it
   */
  constructor(options) {
    this.#options = {
      ...DEFAULTS,
      ...options,
      backoff: { ...DEFAULTS.backoff, ...options.backoff },
    };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('no WebSocket: pass options.WebSocket (Node 20 needs --experimental-websocket)');
    }
    /** idle | connecting | open | reconnecting | closed */
    this.state = 'idle';
    /** `welcome.user`, `welcome.session`, `welcome.gateway`, `welcome.limits` of this connection. */
    this.user = null;
    this.session = null;
    this.gateway = null;
    this.limits = null;
    /** What the gateway agreed in the handshake, e.g. permessage-deflate. */
    this.extensions = '';
    /** Connections that reached `welcome` after the first one. */
    this.reconnects = 0;
  }

  // ---- events ----

  /** Calls `listener(detail)` for each event of `type`; returns a function that stops it. */
  on(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }

  #emit(type, detail) {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        listener(detail);
      } catch (e) {
        // One listener's fault must not stop the protocol; report it where it is seen.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  // ---- the connection ----

  /** Starts connecting (and reconnecting until `close()` or a final close code). */
  connect() {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#attempt = 0;
    this.#open();
  }

  /** Closes for good (1000); every pending request is rejected with `closed`. */
  close(reason = 'closed by the application') {
    this.#stopped = true;
    this.#clearTimers();
    const ws = this.#ws;
    this.#ws = null;
    this.#welcomed = false;
    if (ws) {
      detach(ws);
      ws.close(1000);
    }
    this.#failPending(() => true, 'closed', reason);
    this.#setState('closed', { reason });
  }

  /** Drops the current socket (as if the link died) and reconnects with the usual backoff. */
  reconnect() {
    if (this.#ws) this.#giveUp(this.#ws, 'dropped by the application');
  }

  /** Skips the rest of the current backoff wait. */
  retryNow() {
    if (this.state !== 'reconnecting' || this.#stopped) return;
    clearTimeout(this.#timers.retry);
    this.#open();
  }

  async #open() {
    this.#clearTimers();
    this.#welcomed = false;
    this.#setState('connecting');
    const attempt = (this.#opens += 1);
    let ws;
    try {
      const token = typeof this.#options.token === 'function' ? await this.#options.token() : this.#options.token;
      const { url } = this.#options;
      const address =
        typeof url === 'function' ? await url(token) : token ? withToken(url, token) : url;
      if (this.#stopped || attempt !== this.#opens) return;
      ws = new this.#WebSocket(address, SUBPROTOCOL);
    } catch (e) {
      if (this.#stopped || attempt !== this.#opens) return;
      this.#retryLater(null, `cannot connect: ${e.message}`, false);
      return;
    }
    this.#ws = ws;
    ws.onmessage = (event) => this.#received(ws, event.data);
    ws.onclose = (event) => this.#closed(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event follows and says the rest
    this.#timers.welcome = setTimeout(() => this.#giveUp(ws, 'no welcome'), this.#options.welcomeTimeoutMs);
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
      this.#welcome(ws, frame);
      return;
    }
    const request = frame.ref === undefined ? undefined : this.#pending.get(frame.ref);
    switch (frame.type) {
      case 'joined':
        return this.#joined(frame, request);
      case 'message':
        return this.#message(frame);
      case 'history':
        if (request) return this.#answer(frame, request);
        return undefined;
      case 'error':
        return this.#error(frame, request);
      case 'kicked':
        this.#forget(frame.room, 'not_joined', `no longer in ${frame.room}`);
        return this.#emit('kicked', frame);
      case 'left':
      case 'presence':
      case 'ack':
      case 'pong':
        if (request) this.#answer(frame, request);
        if (frame.type === 'left' || frame.type === 'presence') this.#emit(frame.type, frame);
        return undefined;
      default:
        // member, typing, moderation, and frame types added after this client.
        return this.#emit(frame.type, frame);
    }
  }

  #welcome(ws, frame) {
    clearTimeout(this.#timers.welcome);
    this.#welcomed = true;
    this.#attempt = 0;
    if (this.#generation > 0) this.reconnects += 1;
    this.#generation += 1;
    Object.assign(this, {
      user: frame.user,
      session: frame.session,
      gateway: frame.gateway,
      limits: frame.limits,
      extensions: ws.extensions ?? '',
    });
    this.#pingSentAt = 0;
    this.#timers.heartbeat = setInterval(() => this.#beat(ws), this.#options.pingEveryMs);
    this.#setState('open');
    this.#emit('welcome', frame);
    if (this.#ws !== ws) return; // a listener dropped it
    for (const [room, r] of this.#rooms) {
      r.order.disconnected();
      this.#sendJoin(room, r);
    }
    // What does not wait for a room's `joined`: dms, reads, sends to untracked rooms.
    this.#flush((request) => request.frame.type !== 'send' || !this.#rooms.has(request.frame.room));
  }

  #beat(ws) {
    const unanswered = this.#pingSentAt && this.#lastRx < this.#pingSentAt;
    if (unanswered && Date.now() - this.#pingSentAt > this.#options.pingGraceMs) {
      this.#giveUp(ws, 'no answer to ping');
      return;
    }
    if (!unanswered) {
      this.#pingSentAt = Date.now();
      this.#write({ type: 'ping' });
    }
  }

  /** Abandons a socket that stopped answering, without waiting for its close. */
  #giveUp(ws, reason) {
    if (ws !== this.#ws) return;
    detach(ws);
    try {
      ws.close(GAVE_UP, reason);
    } catch {
      // Already closing.
    }
    this.#closed(ws, GAVE_UP, reason);
  }

  #closed(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    const wasWelcomed = this.#welcomed;
    this.#welcomed = false;
    this.#clearTimers();
    for (const r of this.#rooms.values()) r.order.disconnected();
    // Requests that cannot be repeated safely are given up; the rest wait for the next link.
    this.#failPending((r) => !REPEATABLE.has(r.frame.type) && r.frame.type !== 'join', 'disconnected', `closed (${code})`);
    if (this.#stopped) return;
    if (FINAL_CLOSE_CODES.has(code)) {
      this.#stopped = true;
      this.#failPending(() => true, 'closed', `closed by the server (${code})`);
      this.#setState('closed', { code, reason: reason || `closed (${code})` });
      return;
    }
    if (code === TOKEN_EXPIRED && typeof this.#options.token !== 'function') {
      this.#stopped = true;
      this.#failPending(() => true, 'closed', 'token expired');
      this.#setState('closed', { code, reason: 'token expired' });
      return;
    }
    this.#retryLater(code, reason || `closed (${code})`, !wasWelcomed);
  }

  #retryLater(code, reason, handshakeFailed) {
    const delay = backoffDelay(this.#attempt, this.#options.backoff);
    this.#attempt += 1;
    this.#timers.retry = setTimeout(() => this.#open(), delay);
    this.#setState('reconnecting', { code, reason, retryAt: Date.now() + delay, attempt: this.#attempt });
    if (handshakeFailed && this.#options.diagnose) this.#askWhy();
  }

  /** The handshake failed: the application may know why (an HTTP request tells 401 apart). */
  async #askWhy() {
    const reason = await this.#options.diagnose().catch(() => null);
    if (reason && this.state === 'reconnecting') {
      this.#stopped = true;
      this.#clearTimers();
      this.#failPending(() => true, 'closed', reason);
      this.#setState('closed', { reason });
    }
  }

  #setState(state, detail = {}) {
    const previous = this.state;
    this.state = state;
    this.#emit('state', { state, previous, extensions: this.extensions, ...detail });
  }

  #clearTimers() {
    clearTimeout(this.#timers.retry);
    clearTimeout(this.#timers.welcome);
    clearInterval(this.#timers.heartbeat);
  }

  /** Writes a frame if the link is up and greeted; false otherwise. */
  #write(frame) {
    if (!this.#welcomed || this.#ws?.readyState !== 1) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  // ---- requests ----

  /** Remembers a request until its answer; writes it now if it can go now. */
  #request(frame, { now = true } = {}) {
    const ref = frame.ref ?? this.#newRef();
    if (this.state === 'closed') return Promise.reject(new WarrenError('closed', 'the client is closed'));
    return new Promise((resolve, reject) => {
      const request = { frame: { ...frame, ref }, resolve, reject, sentOn: 0 };
      this.#pending.set(ref, request);
      if (now) this.#transmit(request);
    });
  }

  #transmit(request) {
    if (request.sentOn === this.#generation) return;
    if (this.#write(request.frame)) request.sentOn = this.#generation;
  }

  /** Writes, in the order they were made, the waiting requests that `which` selects. */
  #flush(which) {
    for (const request of this.#pending.values()) {
      if (request.frame.type !== 'join' && which(request)) this.#transmit(request);
    }
  }

  #answer(frame, request) {
    this.#pending.delete(frame.ref);
    request.resolve(frame);
  }

  #failPending(which, code, message) {
    for (const [ref, request] of this.#pending) {
      if (!which(request)) continue;
      this.#pending.delete(ref);
      request.reject(new WarrenError(code, message));
    }
  }

  #error(frame, request) {
    if (!request) {
      this.#emit('error', new WarrenError(frame.code, frame.message, frame));
      return;
    }
    this.#pending.delete(frame.ref);
    if (request.frame.type === 'join') this.#forget(request.frame.room, frame.code, frame.message);
    request.reject(new WarrenError(frame.code, frame.message, frame));
  }

  /**
   * Joins a room and keeps it joined across reconnects. Resolves with the `joined`
   * detail (see the `joined` event); its history is also delivered as `message` events.
   */
  join(room) {
    let r = this.#rooms.get(room);
    if (!r) {
      r = { order: new RoomOrder(), joinRef: null };
      this.#rooms.set(room, r);
    }
    return this.#sendJoin(room, r);
  }

  #sendJoin(room, r) {
    const frame = { type: 'join', room, ref: this.#newRef() };
    if (r.order.epoch !== null) {
      frame.since = r.order.seq;
      frame.epoch = r.order.epoch;
    }
    // A join still unanswered from an earlier link is answered by this one.
    const previous = r.joinRef && this.#pending.get(r.joinRef);
    if (previous) this.#pending.delete(r.joinRef);
    r.joinRef = frame.ref;
    const promise = this.#request(frame);
    if (previous) promise.then(previous.resolve, previous.reject);
    return promise;
  }

  /** Leaves a room: it is not rejoined, and its unsent messages are rejected. */
  leave(room) {
    this.#forget(room, 'not_joined', `left ${room}`);
    const left = { type: 'left', room };
    if (!this.#welcomed) return Promise.resolve(left);
    // Not rejoined after a drop either, so a leave cut short by one has still happened.
    return this.#request({ type: 'leave', room }).catch((e) => {
      if (e.code === 'disconnected' || e.code === 'closed') return left;
      throw e;
    });
  }

  /** Stops tracking a room: no rejoin, its waiting join and sends are rejected. */
  #forget(room, code, message) {
    if (!this.#rooms.delete(room)) return;
    this.#failPending(
      (r) => r.frame.room === room && (r.frame.type === 'send' || r.frame.type === 'join'),
      code,
      message,
    );
  }

  /**
   * Sends a message; resolves with the `ack` (`room`, `id`, `seq`) once it is stored.
   * Kept across reconnects and sent again with the same `ref` until answered.
   */
  send(room, text, { ref } = {}) {
    const r = this.#rooms.get(room);
    return this.#request({ type: 'send', room, text, ref }, { now: !r || r.order.joined });
  }

  /** A direct message to a user; the `ack` names the `dm:` room. */
  dm(to, text, { ref } = {}) {
    return this.#request({ type: 'dm', to, text, ref });
  }

  /** Older messages: resolves with the `history` frame (`messages`, `complete`). */
  history(room, { before, limit } = {}) {
    const frame = { type: 'history', room };
    if (before !== undefined) frame.before = before;
    if (limit !== undefined) frame.limit = limit;
    return this.#request(frame);
  }

  /** Resolves with the room's members, [{id, name}]. */
  async presence(room) {
    return (await this.#request({ type: 'presence', room })).members;
  }

  /** Tells the room we are typing; false when offline (typing is never queued). */
  typing(room) {
    return this.#write({ type: 'typing', room });
  }

  /**
   * A moderation action: `mute`, `unmute`, `kick`, `ban`, `unban` or `grant`/`revoke`
   * about `user`, `delete` about `msgId`, `configure` with `settings` (the room's
   * visibility, announce, history_limit, history_on_join: only those given change).
   * Rejected with `disconnected` if the link drops before the answer (it is not
   * repeated on its own).
   */
  moderate(room, action, { user, msgId, role, durationS, settings, reason } = {}) {
    const frame = { type: 'moderate', room, action };
    if (user !== undefined) frame.user = user;
    if (msgId !== undefined) frame.msg_id = msgId;
    if (role !== undefined) frame.role = role;
    if (durationS !== undefined) frame.duration_s = durationS;
    if (settings !== undefined) frame.settings = settings;
    if (reason !== undefined) frame.reason = reason;
    return this.#request(frame);
  }

  /** Where the client stands in a room: {epoch, seq, joined}, or null if not tracked. */
  room(room) {
    const r = this.#rooms.get(room);
    return r ? { epoch: r.order.epoch, seq: r.order.seq, joined: r.order.joined } : null;
  }

  // ---- rooms and their order ----

  #joined(frame, request) {
    const r = this.#rooms.get(frame.room);
    if (request) this.#pending.delete(frame.ref);
    if (!r) {
      // Left while the join was on its way.
      this.#write({ type: 'leave', room: frame.room, ref: this.#newRef() });
      request?.reject(new WarrenError('not_joined', `left ${frame.room}`));
      return;
    }
    const { rejoin, reset, deliver } = r.order.applyJoined(frame);
    const detail = { ...frame, rejoin, reset };
    this.#emit('joined', detail);
    request?.resolve(detail);
    this.#deliver(frame.room, r, deliver);
    this.#flush((q) => q.frame.type === 'send' && q.frame.room === frame.room);
  }

  #message(m) {
    const r = this.#rooms.get(m.room);
    if (!r) {
      // A room we do not track (a dm before its room is joined): nothing to order by.
      this.#emit('message', m);
      return;
    }
    const { deliver, restart } = r.order.message(m);
    // A new epoch: the room's history was lost and restarted; join again from scratch.
    if (restart) this.#sendJoin(m.room, r);
    this.#deliver(m.room, r, deliver);
  }

  /** Emits messages in order, then asks `history` for a range still missing, if any. */
  #deliver(room, r, messages) {
    for (const m of messages) this.#emit('message', m);
    const gap = r.order.gap();
    if (!gap) return;
    r.order.repairing = true;
    this.history(room, { before: gap.before, limit: gap.limit }).then(
      (page) => {
        r.order.repairing = false;
        if (this.#rooms.get(room) !== r) return;
        const filled = r.order.filled(gap, page.messages);
        this.#emit('repaired', { room, from: gap.from, to: gap.before - 1, fetched: page.messages.length });
        this.#deliver(room, r, filled);
      },
      () => {
        // Left, closed or refused: the next message, or the rejoin, tries again.
        r.order.repairing = false;
      },
    );
  }
}

/** `url` with `token` as its `token` query parameter. */
function withToken(url, token) {
  const u = new URL(url);
  u.searchParams.set('token', token);
  return u.toString();
}

function detach(ws) {
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
}

// The page's side of the protocol: turns what the user does into calls on the Warren
// client library (/warren.js, the same file as clients/js/warren.js), and its events
// into changes of the State. The library owns the socket: backoff and heartbeat, rejoins
// with `since`, sends kept until their `ack` and repeated with the same `ref`, messages
// in seq order. This module keeps what the page shows: rooms, outboxes, notices.

import { WarrenClient } from './warren.js';
import { claimsOf } from './auth.js';
import { State, isDm, dmRoom, dmPeer, TYPING_SHOWN_MS } from './state.js';

/** `typing` goes out at most this often while the user types. */
const TYPING_EVERY_MS = 3000;
const OLDER_PAGE = 50;
const MUTE_SECONDS = 60;

/** The library's connection states as the page names them. */
const STATE_NAMES = { idle: 'offline', connecting: 'connecting', open: 'online', reconnecting: 'reconnecting', closed: 'offline' };

/** What the user is told when the library stops for good after these close codes. */
const FINAL_REASONS = new Map([
  [1000, 'disconnected'],
  [1008, 'refused by the server (policy)'],
  [4401, 'session expired'],
]);

/** A ref unique across tabs and reloads: the dispatcher dedups sends by (room, user, ref). */
const refPrefix = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) =>
  b.toString(16).padStart(2, '0'),
).join('');
let refCounter = 0;
const newRef = () => `${refPrefix}-${Date.now().toString(36)}-${(refCounter += 1)}`;

export class Chat {
  #client;
  #storage;
  #onChange;
  #lastTypingSent = 0;

  /**
   * token: the JWT; storage: where the wanted rooms survive a reload (sessionStorage);
   * onChange(): called after every change of `state`.
   */
  constructor({ token, storage, onChange }) {
    this.token = token;
    this.#storage = storage;
    this.#onChange = onChange;
    this.state = new State();
    this.state.admin = (claimsOf(token)?.roles ?? []).includes('admin');
    this.state.connection.extensions = '';
    this.#restoreRooms();
    // The token goes in the `warren_token` cookie, set just before each attempt, never in
    // the URL: URLs end up in proxy and server logs. The page and `/ws` share an origin
    // (the gateway serves both), the cookie is sent to `/ws` only, same-site only, and
    // lives a minute. Cookies are shared by the browser's tabs, so a tab signed in as
    // someone else could set it between this tab's set and its handshake: `welcome`
    // says whom the gateway saw, and a mismatch is dropped and retried (#welcome).
    this.#client = new WarrenClient({
      url: () => {
        this.#setTokenCookie();
        const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
        return `${scheme}://${location.host}/ws`;
      },
      diagnose: () => this.#whyRefused(),
    });
    const on = (type, handler) =>
      this.#client.on(type, (detail) => {
        handler.call(this, detail);
        this.#changed();
      });
    on('state', this.#connectionChanged);
    on('welcome', this.#welcome);
    on('joined', this.#joined);
    on('message', this.#message);
    on('left', (frame) => {
      const room = this.state.rooms.get(frame.room);
      if (room) room.joined = false;
    });
    on('member', this.#member);
    on('typing', this.#typing);
    on('moderation', this.#moderation);
    on('kicked', this.#kicked);
    on('error', (e) => this.#notify(`${e.code}: ${e.frame?.message ?? ''}`.trim(), 'error'));
    window.addEventListener('online', () => this.retryNow());
  }

  start() {
    for (const room of this.state.rooms.values()) if (room.wanted) this.#join(room);
    this.#client.connect();
  }

  stop() {
    this.#client.close('signed out');
  }

  retryNow() {
    this.#client.retryNow();
  }

  // ---- what the user does ----

  /** Joins a room (or a dm room, which loads its history) and shows it. */
  join(id) {
    const room = this.state.room(id);
    const wanted = room.wanted;
    room.wanted = true;
    this.open(id);
    if (!wanted) this.#join(room);
    this.#saveRooms();
  }

  /** Shows a room; a dm conversation seen only through live messages gets joined. */
  open(id) {
    const room = this.state.rooms.get(id);
    if (!room) return;
    this.state.active = id;
    room.unread = 0;
    if (isDm(id) && !room.wanted) this.join(id);
    this.#saveRooms();
    this.#changed();
  }

  leave(id) {
    const room = this.state.rooms.get(id);
    if (!room) return;
    if (room.wanted) this.#client.leave(id).catch(() => {}); // gone from the page either way
    this.state.rooms.delete(id);
    if (this.state.active === id) this.state.active = this.state.rooms.keys().next().value ?? null;
    this.#saveRooms();
    this.#changed();
  }

  /** Starts (or opens) the conversation with a user. */
  startDm(user) {
    this.join(dmRoom(this.state.me.id, user));
  }

  /** Sends text to a room: `send`, or `dm` for a dm room. Shown as pending until `ack`. */
  say(id, text) {
    const room = this.state.rooms.get(id);
    if (!room) return;
    const entry = { ref: newRef(), text, status: 'sending', error: null };
    room.outbox.push(entry);
    // The message ends the burst (members drop "X is typing" when it arrives): the
    // next keystroke may say so again at once.
    this.#lastTypingSent = 0;
    this.#transmit(room, entry);
    this.#changed();
  }

  /** Sends again a message that failed (with a new ref: the failed one was not stored). */
  retry(id, ref) {
    const room = this.state.rooms.get(id);
    const entry = room?.outbox.find((e) => e.ref === ref);
    if (!entry) return;
    Object.assign(entry, { ref: newRef(), status: 'sending', error: null });
    this.#transmit(room, entry);
    this.#changed();
  }

  discard(id, ref) {
    const room = this.state.rooms.get(id);
    if (!room) return;
    room.outbox = room.outbox.filter((e) => e.ref !== ref);
    this.#changed();
  }

  /** Tells the room we are typing, at most every few seconds. */
  typing(id) {
    const room = this.state.rooms.get(id);
    const now = Date.now();
    if (!room?.joined || now - this.#lastTypingSent < TYPING_EVERY_MS) return;
    if (this.#client.typing(id)) this.#lastTypingSent = now;
  }

  loadOlder(id) {
    const room = this.state.rooms.get(id);
    if (!room || room.loadingOlder || !room.joined) return;
    const before = room.messages[0]?.seq ?? room.lastSeq + 1;
    room.loadingOlder = true;
    this.#client
      .history(id, { before, limit: OLDER_PAGE })
      .then((frame) => this.state.rooms.get(id)?.applyHistory(frame))
      .catch((e) => {
        room.loadingOlder = false;
        this.#notify(`Could not load older messages: ${describe(e)}`, 'error');
      })
      .finally(() => this.#changed());
    this.#changed();
  }

  refreshPresence(id) {
    this.#client
      .presence(id)
      .then((members) => {
        const room = this.state.rooms.get(id);
        if (room) room.members = new Map(members.map((u) => [u.id, u]));
        members.forEach((u) => this.state.learn(u));
      })
      .catch(() => {}) // the next refresh, or the member events, tell the same
      .finally(() => this.#changed());
  }

  /** action: mute (60 s), kick, ban about a user; delete about a message. */
  moderate(id, action, target) {
    if (this.#client.state !== 'open') {
      this.#notify('Not connected: try again when online.', 'error');
      return;
    }
    const options = action === 'delete' ? { msgId: target } : { user: target };
    if (action === 'mute') options.durationS = MUTE_SECONDS;
    this.#client.moderate(id, action, options).catch((e) => {
      this.#notify(`Could not ${action}: ${describe(e)}`, 'error');
      this.#changed();
    });
  }

  dismissNotice() {
    this.state.notice = null;
    this.#changed();
  }

  // ---- requests ----

  /** The library keeps the room joined across reconnects; this hears how the join ends. */
  #join(room) {
    this.#client.join(room.id).catch((e) => {
      if (this.state.rooms.get(room.id) !== room || !room.wanted) return; // left meanwhile
      this.#notify(`Could not join ${this.state.title(room.id)}: ${describe(e)}`, 'error');
      room.wanted = false;
      // A dm needs no join to be sent; a public room without history goes away.
      if (isDm(room.id)) room.outbox.forEach((entry) => this.#transmit(room, entry));
      else if (room.messages.length === 0) this.leave(room.id);
      this.#saveRooms();
      this.#changed();
    });
  }

  /**
   * Hands an outbox entry to the library, which keeps it until its `ack` or `error` and,
   * after a reconnect, sends it again with the same ref (stored once by the dispatcher).
   */
  #transmit(room, entry) {
    if (entry.status !== 'sending' || entry.handed === entry.ref) return;
    if (isDm(room.id) && !this.state.me) return; // the peer is known from `welcome` on
    entry.handed = entry.ref;
    const { ref } = entry;
    const sent = isDm(room.id)
      ? this.#client.dm(dmPeer(room.id, this.state.me.id), entry.text, { ref })
      : this.#client.send(room.id, entry.text, { ref });
    sent
      .then((ack) => this.#acked(room, entry, ack))
      .catch((e) => {
        if (entry.ref === ref) Object.assign(entry, { status: 'failed', error: e.code, detail: e.frame?.message ?? e.message });
      })
      .finally(() => this.#changed());
  }

  // ---- what the library tells ----

  #connectionChanged({ state, code, reason, retryAt, extensions }) {
    const name = STATE_NAMES[state];
    const why = state === 'closed' ? FINAL_REASONS.get(code) ?? reason : reason;
    this.state.connection = {
      ...this.state.connection,
      name,
      retryAt: state === 'reconnecting' ? retryAt : 0,
      reason: state === 'open' ? '' : why ?? '',
      reconnects: this.#client.reconnects,
      // What the gateway agreed, e.g. permessage-deflate (compression).
      extensions: extensions ?? '',
    };
  }

  #welcome(frame) {
    const sub = claimsOf(this.token)?.sub;
    if (sub && frame.user?.id !== sub) {
      // Another tab's token reached the handshake through the shared cookie.
      this.#client.reconnect();
      return;
    }
    Object.assign(this.state, { me: frame.user, gateway: frame.gateway, limits: frame.limits });
    this.state.learn(frame.user);
    for (const room of this.state.rooms.values()) {
      room.joined = false;
      // Typed before the first connection knew who we are: a dm needs the peer's id.
      if (isDm(room.id)) room.outbox.forEach((entry) => this.#transmit(room, entry));
    }
  }

  #joined(frame) {
    const room = this.state.rooms.get(frame.room);
    if (!room || !room.wanted) return;
    room.applyJoined(frame);
    frame.members.forEach((u) => this.state.learn(u));
  }

  #message(m) {
    this.state.learn(m.from);
    const room = this.state.room(m.room);
    room.epoch ??= m.epoch;
    room.lastSeq = Math.max(room.lastSeq, m.seq);
    room.typing.delete(m.from.id);
    if (room.add(m) && this.state.active !== m.room && m.from.id !== this.state.me?.id) {
      room.unread += 1;
    }
    if (!this.state.active) this.open(m.room);
  }

  #acked(room, entry, ack) {
    if (!room.outbox.includes(entry) || entry.ref !== ack.ref) return;
    room.outbox = room.outbox.filter((e) => e !== entry);
    // The ack can overtake our own `message` event: show the message now, the event
    // will be recognised by its id.
    if (ack.id) {
      room.add({
        room: room.id,
        id: ack.id,
        seq: ack.seq,
        epoch: room.epoch,
        from: { ...this.state.me, bot: false },
        text: entry.text,
        ts: Date.now(),
      });
    }
  }

  #member(frame) {
    const room = this.state.rooms.get(frame.room);
    if (!room) return;
    this.state.learn(frame.user);
    if (frame.event === 'joined') room.members.set(frame.user.id, frame.user);
    else room.members.delete(frame.user.id);
  }

  #typing(frame) {
    if (frame.user.id === this.state.me?.id) return;
    const room = this.state.rooms.get(frame.room);
    room?.typing.set(frame.user.id, { name: frame.user.name, until: Date.now() + TYPING_SHOWN_MS });
  }

  #moderation(frame) {
    const room = this.state.rooms.get(frame.room);
    if (!room) return;
    const by = frame.by?.name ?? 'a moderator';
    const who = frame.user?.name ?? frame.user?.id ?? '';
    const until = frame.until ? ` until ${new Date(frame.until).toLocaleTimeString()}` : '';
    const reason = frame.reason ? ` (${frame.reason})` : '';
    const lines = {
      mute: `${by} muted ${who}${until}`,
      unmute: `${by} unmuted ${who}`,
      kick: `${by} removed ${who}`,
      ban: `${by} banned ${who}${until}`,
      unban: `${by} lifted the ban on ${who}`,
      delete: `${by} deleted a message`,
      grant: `${by} made ${who} ${frame.role ?? 'moderator'}`,
      revoke: `${by} took ${frame.role ?? 'moderator'} from ${who}`,
    };
    if (frame.action === 'delete' && frame.msg_id) room.remove(frame.msg_id);
    if (frame.user?.id === this.state.me?.id) {
      if (frame.action === 'grant' && frame.role) room.role = frame.role;
      if (frame.action === 'revoke') room.role = 'member';
    }
    room.note(`${lines[frame.action] ?? `${by}: ${frame.action} ${who}`}${reason}`);
  }

  #kicked(frame) {
    const room = this.state.rooms.get(frame.room);
    if (!room) return;
    room.joined = false;
    room.wanted = false;
    room.note(`You are no longer in this room${frame.reason ? `: ${frame.reason}` : ''}.`);
    this.#saveRooms();
  }

  #notify(text, kind = 'info') {
    this.state.notice = { text, kind, at: Date.now() };
  }

  // ---- persistence and diagnosis ----

  #saveRooms() {
    const rooms = [...this.state.rooms.values()].filter((r) => r.wanted).map((r) => r.id);
    this.#storage.setItem('warren.rooms', JSON.stringify({ rooms, active: this.state.active }));
  }

  #restoreRooms() {
    try {
      const saved = JSON.parse(this.#storage.getItem('warren.rooms') ?? 'null');
      for (const id of saved?.rooms ?? []) this.state.room(id).wanted = true;
      if (saved?.active && this.state.rooms.has(saved.active)) this.state.active = saved.active;
    } catch {
      // Nothing usable saved.
    }
  }

  /** A refused handshake looks like any dropped socket; plain HTTP tells 401 apart. */
  async #whyRefused() {
    const claims = claimsOf(this.token);
    if (claims?.exp && claims.exp * 1000 < Date.now()) return 'session expired';
    this.#setTokenCookie();
    const response = await fetch('/ws', { cache: 'no-store', credentials: 'same-origin' });
    return response.status === 401 ? 'token refused' : null;
  }

  /** The token in the cookie the gateway reads on `/ws` (see the constructor). */
  #setTokenCookie() {
    const secure = location.protocol === 'https:' ? '; Secure' : '';
    document.cookie = `warren_token=${encodeURIComponent(this.token)}; Path=/ws; Max-Age=60; SameSite=Strict${secure}`;
  }

  #changed() {
    this.#onChange();
  }
}

/** A WarrenError as the user reads it. */
function describe(e) {
  const detail = e.frame?.message;
  return detail ? `${e.code}: ${detail}` : e.message;
}

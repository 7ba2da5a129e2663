// The protocol: turns what the user does into client frames, and server frames into
// changes of the State. Every frame that expects an answer carries a fresh `ref`; the
// `requests` map remembers what each ref was for, so an `ack` or `error` lands on the
// right room, message or button.

import { claimsOf } from './auth.js';
import { Connection } from './connection.js';
import { State, isDm, dmRoom, dmPeer, TYPING_SHOWN_MS } from './state.js';

/** `typing` goes out at most this often while the user types. */
const TYPING_EVERY_MS = 3000;
const OLDER_PAGE = 50;
const MUTE_SECONDS = 60;

/** A ref unique across tabs and reloads: the dispatcher dedups sends by (room, user, ref). */
const refPrefix = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) =>
  b.toString(16).padStart(2, '0'),
).join('');
let refCounter = 0;
const newRef = () => `${refPrefix}-${Date.now().toString(36)}-${(refCounter += 1)}`;

export class Chat {
  #connection;
  #storage;
  #onChange;
  #requests = new Map();
  /** Counts connections (welcomes), to tell a send of this link from one of the last. */
  #generation = 0;
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
    this.#restoreRooms();
    // The token goes in the `warren_token` cookie, set just before each attempt, never in
    // the URL: URLs end up in proxy and server logs. The page and `/ws` share an origin
    // (the gateway serves both), the cookie is sent to `/ws` only, same-site only, and
    // lives a minute. Cookies are shared by the browser's tabs, so a tab signed in as
    // someone else could set it between this tab's set and its handshake: `welcome`
    // says whom the gateway saw, and a mismatch is dropped and retried (#handle).
    const socketUrl = () => {
      this.#setTokenCookie();
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      return `${scheme}://${location.host}/ws`;
    };
    this.#connection = new Connection({
      url: socketUrl,
      onFrame: (frame) => {
        this.#handle(frame);
        this.#changed();
      },
      onState: (state) => {
        this.state.connection = state;
        this.#changed();
      },
      diagnose: () => this.#whyRefused(),
    });
  }

  start() {
    this.#connection.start();
  }

  stop() {
    this.#connection.stop();
  }

  retryNow() {
    this.#connection.retryNow();
  }

  // ---- what the user does ----

  /** Joins a room (or a dm room, which loads its history) and shows it. */
  join(id) {
    const room = this.state.room(id);
    room.wanted = true;
    this.open(id);
    if (!room.joined) this.#join(room);
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
    if (room.joined) this.#request({ type: 'leave', room: id }, { kind: 'leave', room: id });
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
    const entry = { ref: newRef(), text, status: 'sending', error: null, sentOn: 0 };
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
    Object.assign(entry, { ref: newRef(), status: 'sending', error: null, sentOn: 0 });
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
    if (this.#connection.send({ type: 'typing', room: id })) this.#lastTypingSent = now;
  }

  loadOlder(id) {
    const room = this.state.rooms.get(id);
    if (!room || room.loadingOlder || !room.joined) return;
    const before = room.messages[0]?.seq ?? room.lastSeq + 1;
    const frame = { type: 'history', room: id, before, limit: OLDER_PAGE };
    if (this.#request(frame, { kind: 'history', room: id })) {
      room.loadingOlder = true;
      this.#changed();
    }
  }

  refreshPresence(id) {
    this.#request({ type: 'presence', room: id }, { kind: 'presence', room: id });
  }

  /** action: mute (60 s), kick, ban about a user; delete about a message. */
  moderate(id, action, target) {
    const frame = { type: 'moderate', room: id, action };
    if (action === 'delete') frame.msg_id = target;
    else frame.user = target;
    if (action === 'mute') frame.duration_s = MUTE_SECONDS;
    if (!this.#request(frame, { kind: 'moderate', room: id, action })) {
      this.#notify('Not connected: try again when online.', 'error');
    }
  }

  dismissNotice() {
    this.state.notice = null;
    this.#changed();
  }

  // ---- frames out ----

  /** Sends a frame with a fresh ref and remembers what it was for; false when offline. */
  #request(frame, context) {
    const ref = frame.ref ?? newRef();
    if (!this.#connection.send({ ...frame, ref })) return false;
    this.#requests.set(ref, context);
    return true;
  }

  #join(room) {
    const frame = { type: 'join', room: room.id };
    if (room.synced) {
      frame.since = room.lastSeq;
      frame.epoch = room.epoch;
    }
    this.#request(frame, { kind: 'join', room: room.id });
  }

  /**
   * Sends an outbox entry on the current link, once. `send` needs the room joined; a dm
   * goes out as `dm` at once. After a reconnect the same ref is sent again: the
   * dispatcher answers a retry with the first `ack` and never stores it twice.
   */
  #transmit(room, entry) {
    if (entry.status !== 'sending' || entry.sentOn === this.#generation) return;
    let frame;
    if (isDm(room.id)) {
      frame = { type: 'dm', to: dmPeer(room.id, this.state.me.id), text: entry.text, ref: entry.ref };
    } else if (room.joined) {
      frame = { type: 'send', room: room.id, text: entry.text, ref: entry.ref };
    } else {
      return;
    }
    if (this.#request(frame, { kind: 'send', room: room.id, ref: entry.ref })) {
      entry.sentOn = this.#generation;
    }
  }

  // ---- frames in ----

  #handle(frame) {
    const context = frame.ref ? this.#requests.get(frame.ref) : undefined;
    if (frame.ref) this.#requests.delete(frame.ref);
    switch (frame.type) {
      case 'welcome':
        return this.#welcome(frame);
      case 'joined':
        return this.#joined(frame);
      case 'left': {
        const room = this.state.rooms.get(frame.room);
        if (room) room.joined = false;
        return;
      }
      case 'message':
        return this.#message(frame);
      case 'ack':
        return this.#ack(frame, context);
      case 'history':
        return this.state.rooms.get(frame.room)?.applyHistory(frame);
      case 'presence': {
        const room = this.state.rooms.get(frame.room);
        if (room) room.members = new Map(frame.members.map((u) => [u.id, u]));
        frame.members.forEach((u) => this.state.learn(u));
        return;
      }
      case 'member':
        return this.#member(frame);
      case 'typing':
        return this.#typing(frame);
      case 'moderation':
        return this.#moderation(frame);
      case 'kicked':
        return this.#kicked(frame);
      case 'error':
        return this.#error(frame, context);
      default:
        return; // pong, and frame types added after this client
    }
  }

  #welcome(frame) {
    const sub = claimsOf(this.token)?.sub;
    if (sub && frame.user?.id !== sub) {
      // Another tab's token reached the handshake through the shared cookie.
      this.#connection.drop();
      return;
    }
    this.#generation += 1;
    this.#requests.clear();
    Object.assign(this.state, { me: frame.user, gateway: frame.gateway, limits: frame.limits });
    this.state.learn(frame.user);
    for (const room of this.state.rooms.values()) {
      room.joined = false;
      if (room.wanted) this.#join(room);
      else room.outbox.forEach((entry) => this.#transmit(room, entry));
    }
  }

  #joined(frame) {
    const room = this.state.rooms.get(frame.room);
    if (!room || !room.wanted) {
      // Left (or closed) while the join was on its way.
      this.#request({ type: 'leave', room: frame.room }, { kind: 'leave', room: frame.room });
      return;
    }
    room.applyJoined(frame);
    frame.members.forEach((u) => this.state.learn(u));
    room.outbox.forEach((entry) => this.#transmit(room, entry));
  }

  #message(m) {
    this.state.learn(m.from);
    const room = this.state.room(m.room);
    if (room.joined && room.epoch !== null && m.epoch !== room.epoch) {
      // The room's history was lost and restarted: what we hold cannot be trusted.
      room.synced = false;
      this.#join(room);
      return;
    }
    room.epoch ??= m.epoch;
    room.lastSeq = Math.max(room.lastSeq, m.seq);
    room.typing.delete(m.from.id);
    if (room.add(m) && this.state.active !== m.room && m.from.id !== this.state.me?.id) {
      room.unread += 1;
    }
    if (!this.state.active) this.open(m.room);
  }

  #ack(frame, context) {
    if (context?.kind !== 'send') return;
    const room = this.state.rooms.get(frame.room ?? context.room) ?? this.state.rooms.get(context.room);
    if (!room) return;
    const entry = room.outbox.find((e) => e.ref === frame.ref);
    room.outbox = room.outbox.filter((e) => e.ref !== frame.ref);
    // The ack can overtake our own `message` event: show the message now, the event
    // will be recognised by its id. `lastSeq` is left to the events, so a reconnect
    // still asks for anything sent before it.
    if (entry && frame.id) {
      room.add({
        room: room.id,
        id: frame.id,
        seq: frame.seq,
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

  #error(frame, context) {
    const text = `${frame.code}: ${frame.message ?? ''}`.trim();
    const room = context ? this.state.rooms.get(context.room) : null;
    switch (context?.kind) {
      case 'send': {
        const entry = room?.outbox.find((e) => e.ref === frame.ref);
        if (entry) Object.assign(entry, { status: 'failed', error: frame.code, detail: frame.message });
        return;
      }
      case 'join':
        this.#notify(`Could not join ${this.state.title(context.room)}: ${text}`, 'error');
        if (room) {
          room.wanted = false;
          // A dm needs no join to be sent; a public room without history goes away.
          if (isDm(room.id)) room.outbox.forEach((entry) => this.#transmit(room, entry));
          else if (room.messages.length === 0) this.leave(room.id);
        }
        this.#saveRooms();
        return;
      case 'history':
        if (room) room.loadingOlder = false;
        this.#notify(`Could not load older messages: ${text}`, 'error');
        return;
      case 'moderate':
        this.#notify(`Could not ${context.action}: ${text}`, 'error');
        return;
      default:
        this.#notify(text, 'error');
    }
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

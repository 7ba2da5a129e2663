// The client's model: who I am, the rooms I know, their messages, members and typists.
// Plain data and the rules that keep it consistent (order by seq, never twice, what a
// `joined` replaces); no DOM and no socket, so it reads like the protocol.

export const ROOM_ID = /^[a-z0-9_-]{1,64}$/;
export const USER_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** How long "X is typing" stays after the last `typing` event. */
export const TYPING_SHOWN_MS = 4000;

export const isDm = (room) => room.startsWith('dm:');

/** The direct-message room of two users: their ids sorted (ASCII, so bytewise). */
export function dmRoom(a, b) {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

/** The other user of a dm room. */
export function dmPeer(room, me) {
  const [, a, b] = room.split(':');
  return a === me ? b : a;
}

export class Room {
  constructor(id) {
    this.id = id;
    /** The user wants to be in this room: joined again after every reconnect. */
    this.wanted = false;
    /** A `joined` answered on the current connection, and no `left`/`kicked` since. */
    this.joined = false;
    /** Epoch of the room's history as last seen; null until a `joined` or a message. */
    this.epoch = null;
    /** Highest seq delivered by the server (joined, message events): the `since` cursor. */
    this.lastSeq = 0;
    /** True once a `joined` filled the history, so a rejoin may ask for `since`. */
    this.synced = false;
    /** Messages in ascending seq. */
    this.messages = [];
    /** Ids of messages shown or deleted, so a late copy never comes back. */
    this.seen = new Set();
    /** System lines ({afterSeq, text}) shown after the message with that seq. */
    this.notes = [];
    /** Sends not acknowledged yet: {ref, text, status: 'sending'|'failed', error}. */
    this.outbox = [];
    this.members = new Map();
    /** User id -> {name, until}. */
    this.typing = new Map();
    this.role = 'member';
    this.hasOlder = false;
    this.loadingOlder = false;
    this.unread = 0;
  }

  /**
   * Adds a message in seq order unless it is already there (same id, or same seq).
   * Returns true when it was added.
   */
  add(message) {
    if (this.seen.has(message.id)) return false;
    let i = this.messages.length;
    while (i > 0 && this.messages[i - 1].seq > message.seq) i -= 1;
    if (i > 0 && this.messages[i - 1].seq === message.seq) return false;
    this.seen.add(message.id);
    this.messages.splice(i, 0, message);
    return true;
  }

  /** Removes a deleted message; its id stays seen. */
  remove(id) {
    this.seen.add(id);
    this.messages = this.messages.filter((m) => m.id !== id);
  }

  /**
   * Applies a `joined` answer. When the server could not recover from our `since`, or
   * the epoch changed (the history was lost), what we hold is not trustworthy and is
   * replaced by `history`; otherwise the missed messages are appended.
   */
  applyJoined(frame) {
    const reset = !frame.recovered || (this.epoch !== null && this.epoch !== frame.epoch);
    if (reset) {
      this.messages = [];
      this.seen.clear();
      this.notes = [];
      this.lastSeq = 0;
    }
    this.epoch = frame.epoch;
    for (const m of frame.history) this.add(m);
    this.lastSeq = Math.max(this.lastSeq, frame.seq);
    if (reset) {
      const first = this.messages[0];
      this.hasOlder = first ? first.seq > 1 : frame.seq > 0;
    }
    this.members = new Map(frame.members.map((u) => [u.id, u]));
    this.role = frame.role;
    this.joined = true;
    this.synced = true;
  }

  /** Applies a page of older messages (`history` with `before`). */
  applyHistory(frame) {
    for (const m of frame.messages) this.add(m);
    this.hasOlder = !frame.complete;
    this.loadingOlder = false;
  }

  note(text) {
    this.notes.push({ afterSeq: this.messages.at(-1)?.seq ?? 0, text });
  }

  /** Names of the users typing now (not me). */
  typists(now) {
    const names = [];
    for (const [id, t] of this.typing) {
      if (t.until > now) names.push(t.name);
      else this.typing.delete(id);
    }
    return names;
  }
}

export class State {
  constructor() {
    /** {id, name} from `welcome`. */
    this.me = null;
    /** The token carries the global `admin` role. */
    this.admin = false;
    this.gateway = '';
    this.limits = null;
    /** Room id -> Room, in the order they were opened. */
    this.rooms = new Map();
    this.active = null;
    /** {name: connecting|online|reconnecting|offline, retryAt, reason, reconnects}. */
    this.connection = { name: 'offline', retryAt: 0, reason: '', reconnects: 0 };
    /** A message for the user: {text, kind: 'error'|'info'}. */
    this.notice = null;
    /** User id -> display name, learnt from messages and presence. */
    this.names = new Map();
  }

  room(id) {
    let room = this.rooms.get(id);
    if (!room) {
      room = new Room(id);
      this.rooms.set(id, room);
    }
    return room;
  }

  activeRoom() {
    return this.active ? this.rooms.get(this.active) ?? null : null;
  }

  learn(user) {
    if (user?.id && user.name) this.names.set(user.id, user.name);
  }

  /** What a room is called in lists and headers. */
  title(id) {
    if (!isDm(id)) return `#${id}`;
    const peer = this.me ? dmPeer(id, this.me.id) : id;
    return `@${this.names.get(peer) ?? peer}`;
  }

  /** Moderation buttons are shown to moderators, owners and global admins. */
  canModerate(room) {
    return !isDm(room.id) && room.joined && (this.admin || room.role === 'moderator' || room.role === 'owner');
  }
}

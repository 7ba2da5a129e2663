// The page: reads the State and draws it, and turns clicks and keys into calls on the
// actions it is given. Every piece of user text goes through textContent (via `el`),
// never through HTML parsing.

import { ROOM_ID, USER_ID, isDm } from './state.js';

/** Builds an element. Strings among the children become text nodes. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'testid') node.dataset.testid = value;
    else if (key === 'data') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

/** Messages closer together than this from one author are drawn as one group. */
const GROUP_MS = 5 * 60 * 1000;

const time = (ts) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

const SEND_ERRORS = {
  muted: 'you are muted here',
  rate_limited: 'too fast, slow down',
  forbidden: 'not allowed',
  not_joined: 'not in this room',
  banned: 'you are banned here',
  too_large: 'too long',
  unavailable: 'server busy, try again',
};

/** The sign-in screen. onSubmit({name, token}) returns a Promise of an error text or null. */
export function showSignIn(onSubmit, message = '') {
  byTestId('chat-view').hidden = true;
  byTestId('signin-view').hidden = false;
  const form = byTestId('signin-form');
  const error = byTestId('signin-error');
  error.hidden = !message;
  error.textContent = message;
  form.onsubmit = async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const submit = byTestId('signin-submit');
    submit.disabled = true;
    const failure = await onSubmit({
      name: String(data.get('name') ?? '').trim(),
      token: String(data.get('token') ?? '').trim(),
    });
    submit.disabled = false;
    error.hidden = !failure;
    error.textContent = failure ?? '';
  };
  byTestId('signin-name').focus();
}

export class View {
  #chat;
  #actions;
  #scroller = byTestId('message-scroller');
  #renderedRoom = null;
  #typingTimer = null;

  /** chat: the Chat (state and actions); actions.signOut() leaves the page's session. */
  constructor(chat, actions) {
    this.#chat = chat;
    this.#actions = actions;
    byTestId('signin-view').hidden = true;
    byTestId('chat-view').hidden = false;
    this.#bind();
  }

  #bind() {
    const chat = this.#chat;
    byTestId('sign-out').onclick = () => this.#actions.signOut();
    byTestId('conn-state').onclick = () => chat.retryNow();
    byTestId('notice-close').onclick = () => chat.dismissNotice();
    byTestId('leave-room').onclick = () => chat.state.active && chat.leave(chat.state.active);
    byTestId('load-older').onclick = () => chat.loadOlder(chat.state.active);
    byTestId('presence-refresh').onclick = () => chat.state.active && chat.refreshPresence(chat.state.active);

    onSubmitValue('join-form', 'join-error', (value) => {
      const room = value.toLowerCase();
      if (!ROOM_ID.test(room)) return 'Room ids are 1–64 of a–z, 0–9, _ and -.';
      chat.join(room);
      return null;
    });
    onSubmitValue('dm-form', 'dm-error', (user) => {
      if (!USER_ID.test(user)) return 'User ids are 1–64 of A–Z, a–z, 0–9, _ and -.';
      if (user === chat.state.me?.id) return 'That is you.';
      if (!chat.state.me) return 'Not connected yet.';
      chat.startDm(user);
      return null;
    });

    const input = byTestId('composer-input');
    const send = () => {
      const room = chat.state.active;
      const text = input.value;
      if (!room || !text.trim()) return;
      const limit = chat.state.limits?.max_text_bytes;
      if (limit && new TextEncoder().encode(text).length > limit) {
        chat.state.notice = { text: `Messages are at most ${limit} bytes.`, kind: 'error' };
        this.render();
        return;
      }
      chat.say(room, text);
      input.value = '';
      input.focus();
    };
    byTestId('composer').onsubmit = (event) => {
      event.preventDefault();
      send();
    };
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send();
      }
    });
    input.addEventListener('input', () => {
      if (input.value.trim() && chat.state.active) chat.typing(chat.state.active);
    });
  }

  render() {
    const state = this.#chat.state;
    const room = state.activeRoom();
    this.#renderIdentity(state);
    this.#renderConnection(state.connection);
    this.#renderRooms(state);
    this.#renderHeader(state, room);
    this.#renderNotice(state.notice);
    this.#renderMessages(state, room);
    this.#renderTyping(room);
    this.#renderMembers(state, room);
    const input = byTestId('composer-input');
    const canSend = Boolean(room && (room.joined || isDm(room.id)));
    input.disabled = !canSend;
    byTestId('composer-send').disabled = !canSend;
  }

  /** Redraws only the connection badge (its countdown ticks every second). */
  tick() {
    this.#renderConnection(this.#chat.state.connection);
  }

  #renderIdentity(state) {
    const me = byTestId('me');
    me.textContent = state.me ? state.me.name : '…';
    me.dataset.user = state.me?.id ?? '';
    const roles = state.admin ? ' · admin' : '';
    byTestId('me-detail').textContent = state.me
      ? `@${state.me.id}${roles} · via ${state.gateway}`
      : '';
  }

  #renderConnection(connection) {
    const badge = byTestId('conn-state');
    badge.dataset.state = connection.name;
    badge.dataset.reconnects = String(connection.reconnects);
    const seconds = Math.max(0, Math.ceil((connection.retryAt - Date.now()) / 1000));
    badge.textContent = {
      connecting: 'Connecting…',
      online: 'Online',
      reconnecting: `Reconnecting in ${seconds}s`,
      offline: `Offline${connection.reason ? ` (${connection.reason})` : ''}`,
    }[connection.name];
    badge.dataset.extensions = connection.extensions;
    const compressed = connection.name === 'online' && connection.extensions.includes('permessage-deflate');
    badge.title = connection.name === 'reconnecting' ? 'Click to retry now' : compressed ? 'Compressed (permessage-deflate)' : '';
  }

  #renderRooms(state) {
    const items = [...state.rooms.values()].map((room) =>
      el(
        'li',
        {},
        el(
          'button',
          {
            type: 'button',
            class: `room-item${room.id === state.active ? ' active' : ''}${room.joined ? '' : ' away'}`,
            testid: 'room-item',
            data: { room: room.id, active: String(room.id === state.active), joined: String(room.joined) },
            onclick: () => this.#chat.open(room.id),
          },
          el('span', { class: 'room-name' }, state.title(room.id)),
          room.unread > 0 ? el('span', { class: 'unread', testid: 'unread' }, String(room.unread)) : null,
        ),
      ),
    );
    byTestId('room-list').replaceChildren(...items);
  }

  #renderHeader(state, room) {
    byTestId('room-title').textContent = room ? state.title(room.id) : 'No room open';
    const role = byTestId('room-role');
    const showRole = room && room.joined && !isDm(room.id) && room.role !== 'member';
    role.hidden = !showRole;
    role.textContent = showRole ? room.role : '';
    byTestId('leave-room').hidden = !room;
    byTestId('leave-room').textContent = room && isDm(room.id) ? 'Close' : 'Leave';
  }

  #renderNotice(notice) {
    const box = byTestId('notice');
    box.hidden = !notice;
    box.dataset.kind = notice?.kind ?? '';
    byTestId('notice-text').textContent = notice?.text ?? '';
  }

  #renderMessages(state, room) {
    const scroller = this.#scroller;
    const switched = this.#renderedRoom !== (room?.id ?? null);
    const fromBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
    const older = byTestId('load-older');
    older.hidden = !room || !room.hasOlder || !room.joined;
    older.disabled = Boolean(room?.loadingOlder);
    older.textContent = room?.loadingOlder ? 'Loading…' : 'Load older messages';

    const rows = [];
    if (room) {
      const canModerate = state.canModerate(room);
      const notes = room.notes;
      let n = 0;
      let previous = null;
      for (const m of room.messages) {
        while (n < notes.length && notes[n].afterSeq < m.seq) rows.push(noteRow(notes[n++]));
        const grouped = previous && previous.from.id === m.from.id && m.ts - previous.ts < GROUP_MS
          && rows.at(-1)?.dataset.testid === 'message';
        rows.push(this.#messageRow(m, grouped, canModerate));
        previous = m;
      }
      while (n < notes.length) rows.push(noteRow(notes[n++]));
      for (const entry of room.outbox) rows.push(this.#pendingRow(room, entry, state.me));
    }
    byTestId('message-list').replaceChildren(...rows);
    const empty = byTestId('empty');
    empty.hidden = rows.length > 0;
    empty.textContent = room
      ? room.joined || isDm(room.id) ? 'No messages yet. Say hello!' : 'You are not in this room. Join it again from the box on the left.'
      : 'Join a room to start chatting.';

    // Stay at the bottom if we were there (or just switched rooms); otherwise keep the
    // same distance from the bottom, so a page of older messages does not move the view.
    if (switched || fromBottom < 40) scroller.scrollTop = scroller.scrollHeight;
    else scroller.scrollTop = scroller.scrollHeight - scroller.clientHeight - fromBottom;
    if (switched) byTestId('composer-input').focus();
    this.#renderedRoom = room?.id ?? null;
  }

  #messageRow(m, grouped, canModerate) {
    return el(
      'li',
      {
        class: `message${grouped ? ' grouped' : ''}`,
        testid: 'message',
        data: { id: m.id, seq: String(m.seq), from: m.from.id },
      },
      el(
        'div',
        { class: 'meta' },
        el('span', { class: 'author', testid: 'message-author', title: `@${m.from.id}` }, m.from.name),
        m.from.bot ? el('span', { class: 'badge' }, 'bot') : null,
        el('time', { testid: 'message-time', datetime: new Date(m.ts).toISOString() }, time(m.ts)),
      ),
      el('div', { class: 'text', testid: 'message-text' }, m.text),
      canModerate
        ? el(
            'button',
            {
              type: 'button',
              class: 'link danger delete',
              testid: 'message-delete',
              title: 'Delete this message',
              onclick: () => this.#chat.moderate(this.#chat.state.active, 'delete', m.id),
            },
            'Delete',
          )
        : null,
    );
  }

  #pendingRow(room, entry, me) {
    const failed = entry.status === 'failed';
    const why = failed ? SEND_ERRORS[entry.error] ?? entry.detail ?? entry.error : '';
    return el(
      'li',
      { class: `message pending${failed ? ' failed' : ''}`, testid: 'message-pending', data: { ref: entry.ref, status: entry.status } },
      el('div', { class: 'meta' }, el('span', { class: 'author' }, me?.name ?? 'me')),
      el('div', { class: 'text' }, entry.text),
      el(
        'div',
        { class: 'status' },
        failed
          ? [
              el('span', { class: 'error', testid: 'pending-error', data: { code: entry.error } }, `Not sent: ${why}`),
              el('button', { type: 'button', class: 'link', testid: 'pending-retry', onclick: () => this.#chat.retry(room.id, entry.ref) }, 'Retry'),
              el('button', { type: 'button', class: 'link', testid: 'pending-discard', onclick: () => this.#chat.discard(room.id, entry.ref) }, 'Discard'),
            ]
          : 'Sending…',
      ),
    );
  }

  #renderTyping(room) {
    clearTimeout(this.#typingTimer);
    const now = Date.now();
    const names = room ? room.typists(now) : [];
    const line = byTestId('typing');
    line.textContent =
      names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…`
        : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : 'Several people are typing…';
    if (names.length) {
      // Redraw when the first of them times out.
      const next = Math.min(...[...room.typing.values()].map((t) => t.until)) - now;
      this.#typingTimer = setTimeout(() => this.render(), Math.max(50, next + 10));
    }
  }

  #renderMembers(state, room) {
    const list = byTestId('member-list');
    byTestId('presence-refresh').hidden = !room?.joined;
    if (!room || !room.joined) {
      list.replaceChildren();
      return;
    }
    const canModerate = state.canModerate(room);
    const members = [...room.members.values()].sort((a, b) => a.name.localeCompare(b.name));
    list.replaceChildren(
      ...members.map((user) => {
        const isMe = user.id === state.me?.id;
        const act = (action) => () => this.#chat.moderate(room.id, action, user.id);
        return el(
          'li',
          { class: 'member', testid: 'member', data: { user: user.id } },
          el('span', { class: 'dot' }),
          el('span', { class: 'member-name', title: `@${user.id}` }, user.name),
          isMe ? el('span', { class: 'you' }, 'you') : null,
          !isMe && !isDm(room.id)
            ? el('button', { type: 'button', class: 'link', testid: 'member-dm', title: 'Direct message', onclick: () => this.#chat.startDm(user.id) }, 'DM')
            : null,
          canModerate && !isMe
            ? el(
                'span',
                { class: 'mod' },
                el('button', { type: 'button', class: 'link', testid: 'mod-mute', onclick: act('mute') }, 'Mute 60s'),
                el('button', { type: 'button', class: 'link', testid: 'mod-kick', onclick: act('kick') }, 'Kick'),
                el('button', { type: 'button', class: 'link danger', testid: 'mod-ban', onclick: act('ban') }, 'Ban'),
              )
            : null,
        );
      }),
    );
  }
}

function noteRow(note) {
  return el('li', { class: 'note', testid: 'system-line' }, note.text);
}

/** Wires a one-field form: check(value) returns an error text, or null when done. */
function onSubmitValue(formId, errorId, check) {
  const form = byTestId(formId);
  const error = byTestId(errorId);
  form.onsubmit = (event) => {
    event.preventDefault();
    const input = form.querySelector('input');
    const failure = check(input.value.trim());
    error.hidden = !failure;
    error.textContent = failure ?? '';
    if (!failure) input.value = '';
  };
}

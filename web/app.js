// Warren's browser client, the entry point: signs in (a development token from
// `POST /dev/token`, or a pasted JWT), keeps the token in sessionStorage, then hands
// over to the Chat (protocol and state) and the View (the page).
//
//   auth.js        development tokens, reading a token's claims
//   warren.js      the client library (clients/js/, with warren-order.js): the WebSocket,
//                  backoff, heartbeat, rejoins, sends kept until acked, messages in order
//   chat.js        what the user does as library calls, library events as State changes
//   state.js       rooms, messages (ordered, never twice), members, typists
//   ui.js          drawing the state; user text only ever as textContent

import { devToken, usable } from './auth.js';
import { Chat } from './chat.js';
import { View, showSignIn } from './ui.js';

const TOKEN_KEY = 'warren.token';
/** A message for the sign-in screen that survives the reload that shows it. */
const SIGNIN_MESSAGE_KEY = 'warren.signin-message';
/** Connection endings that a new token, not a retry, can fix. */
const AUTH_FAILURES = new Set(['session expired', 'token refused']);

function main() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const message = sessionStorage.getItem(SIGNIN_MESSAGE_KEY) ?? '';
  sessionStorage.removeItem(SIGNIN_MESSAGE_KEY);
  if (token && usable(token)) {
    start(token);
  } else {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(signIn, message || (token ? 'Your session expired: sign in again.' : ''));
  }
}

/** Returns an error text for the form, or null once signed in. */
async function signIn({ name, token }) {
  if (token) {
    if (!usable(token)) return 'That token is malformed or expired.';
    sessionStorage.setItem(TOKEN_KEY, token);
    start(token);
    return null;
  }
  if (!name) return 'Pick a name.';
  try {
    token = await devToken(name);
  } catch (e) {
    return e.message;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
  return null;
}

/** Starts the chat for a token. Called once per page load; signing out reloads. */
function start(token) {
  let view = null;
  let drawPending = false;
  const chat = new Chat({
    token,
    storage: sessionStorage,
    onChange: () => {
      // Many changes arrive together (a `joined` with its history): draw once.
      if (drawPending) return;
      drawPending = true;
      queueMicrotask(() => {
        drawPending = false;
        const { name, reason } = chat.state.connection;
        if (name === 'offline' && AUTH_FAILURES.has(reason)) {
          backToSignIn(chat, `Signed out: ${reason}.`);
          return;
        }
        view?.render();
      });
    },
  });
  view = new View(chat, { signOut: () => backToSignIn(chat, '') });
  setInterval(() => view.tick(), 1000);
  view.render();
  chat.start();
}

function backToSignIn(chat, message) {
  chat.stop();
  sessionStorage.clear();
  if (message) sessionStorage.setItem(SIGNIN_MESSAGE_KEY, message);
  location.reload();
}

main();

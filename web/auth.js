// Who the user is: a development token from the gateway's `POST /dev/token`, or a
// JWT pasted by the user, and what the page may read from it without verifying it.

/** The claims of a JWT, unverified (only to read `roles` and `exp` for display). */
export function claimsOf(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part.padEnd(Math.ceil(part.length / 4) * 4, '=')), (c) =>
      c.charCodeAt(0),
    );
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** A token that has a subject and has not expired (the gateway still checks it). */
export function usable(token) {
  const claims = claimsOf(token);
  return Boolean(claims?.sub) && (!claims.exp || claims.exp * 1000 > Date.now());
}

/** Asks the gateway for a development token; throws an Error with a readable message. */
export async function devToken(name) {
  let response;
  try {
    response = await fetch('/dev/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name }),
    });
  } catch {
    throw new Error('The gateway does not answer.');
  }
  if (response.status === 404) throw new Error('Development sign-in is off on this gateway: use a token.');
  const body = await response.json().catch(() => ({}));
  if (!response.ok || typeof body.token !== 'string') {
    throw new Error(body.message ?? `Sign-in failed (${response.status}).`);
  }
  return body.token;
}

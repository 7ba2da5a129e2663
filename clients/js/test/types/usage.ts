// A program written against warren.d.ts the way docs/CLIENTS.md uses the client. It is
// type-checked with `tsc --strict` (typings.test.mjs), never run: it shows that the
// typings describe the documented API and that an application's code checks against them.

import {
  WarrenClient,
  WarrenError,
  backoffDelay,
  type Ack,
  type ConnectionState,
  type Joined,
  type Message,
  type Moderation,
} from '../../warren.js';

const gateway = 'http://127.0.0.1:8080';

async function token(): Promise<string> {
  const response = await fetch(`${gateway}/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Typed' }),
  });
  const body = (await response.json()) as { token: string };
  return body.token;
}

const client = new WarrenClient({
  url: `${gateway.replace(/^http/, 'ws')}/ws`,
  token,
  backoff: { baseMs: 250 },
});

const stop: () => void = client.on('message', (m: Message) => {
  const line: string = `#${m.room} ${m.seq} <${m.from.name ?? m.from.id}> ${m.text}`;
  console.log(line, m.from.bot ? '(bot)' : '');
});
client.on('state', ({ state, code }) => {
  const s: ConnectionState = state;
  console.log(s, code ?? '');
});
client.on('joined', (j: Joined) => j.reset && console.log(`#${j.room}: start again`));
client.on('moderation', (m: Moderation) => {
  if (m.action === 'configure' && m.settings?.announce) console.log(`#${m.room} is announce-only`);
});
client.on('kicked', (k) => console.log(`kicked from #${k.room}: ${k.reason ?? ''}`));
client.on('error', (e: WarrenError) => console.log(e.code));
client.connect();

const joined: Joined = await client.join('lobby');
const ack: Ack = await client.send('lobby', 'hello', { ref: 'my-ref' });
console.log(joined.seq, ack.seq);
const page = await client.history('lobby', { before: joined.seq, limit: 20 });
const texts: string[] = page.messages.map((m) => m.text);
const who = await client.presence('lobby');
console.log(texts, who.map((u) => u.id));
await client.moderate('lobby', 'configure', { settings: { announce: true, history_limit: 500 } });
await client.moderate('lobby', 'mute', { user: 'bob', durationS: 60, reason: 'spam' });
try {
  await client.send('elsewhere', 'x');
} catch (e) {
  if (e instanceof WarrenError && e.code === 'not_joined') console.log('join first');
}
const delay: number = backoffDelay(3, { baseMs: 500, capMs: 10_000 });
console.log(delay, client.state, client.room('lobby')?.seq);
stop();
client.close();

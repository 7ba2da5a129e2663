// The client against a real stack (warren-stack: one dispatcher, two gateways, the
// machine's RabbitMQ and Redis): what it promises an application when gateways restart,
// tokens expire, acks are lost and messages go missing.
//
// Needs target/debug/warren-{stack,gateway,dispatcher}. Run with
// scripts/test-js-client.sh, or: node --experimental-websocket --test clients/js/test/*.test.mjs

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { WarrenClient } from '../warren.js';
import {
  Stack,
  STACK_OPTIONS,
  QUICK,
  mintToken,
  recordingSocket,
  waitFor,
  nextEvent,
  collect,
  within,
} from './support.mjs';

const unique = (name) => `${name}-${randomBytes(3).toString('hex')}`;

describe('the JavaScript client on a real stack', { timeout: 240_000 }, () => {
  let stack;
  const clients = [];

  /** A connected client for `user` on gateway `gw`; closed after the suite. */
  function client(user, gw, options = {}) {
    const c = new WarrenClient({ url: stack.wsUrl(gw), token: () => mintToken(user), ...QUICK, ...options });
    clients.push(c);
    c.connect();
    return c;
  }

  before(async () => {
    stack = await Stack.start(STACK_OPTIONS);
  });

  after(async () => {
    for (const c of clients) c.close();
    await stack?.stop();
  });

  it('loses nothing through a gateway restart: every send acked once, delivered once and in order', async () => {
    const room = unique('restart');
    const recorder = recordingSocket();
    const sender = client('sender', 1, { WebSocket: recorder.WebSocket });
    const receiver = client('receiver', 1);
    const observer = client('observer', 0);
    for (const c of [sender, receiver, observer]) await within('join', c.join(room));
    const received = collect(receiver, room);
    const observed = collect(observer, room);
    const rejoined = nextEvent(receiver, 'joined', (j) => j.room === room && j.rejoin);
    const states = [];
    sender.on('state', ({ state }) => states.push(state));

    const texts = Array.from({ length: 24 }, (_, i) => `m${i}`);
    const acks = [];
    let restart = null;
    for (const [i, text] of texts.entries()) {
      acks.push(sender.send(room, text));
      if (i === 6) {
        // Stopped while sends are in flight; the next ones go out while it is down.
        restart = stack.stopGateway(1).then(() => stack.restartGateway(1));
      }
      await new Promise((ok) => setTimeout(ok, 60));
    }
    await within('the gateway restart', restart, 90_000);
    const answered = await within('every ack', Promise.all(acks), 30_000);

    // Every send was acknowledged, each with its own seq, in the order they were made.
    const seqs = answered.map((a) => a.seq);
    assert.equal(new Set(seqs).size, texts.length);
    seqs.slice(1).forEach((s, i) => assert.ok(s > seqs[i], `ack seqs ascend: ${seqs}`));
    assert.ok(states.includes('reconnecting'), `the sender reconnected: ${states.join(' → ')}`);
    assert.equal(sender.state, 'open');

    // The receiver (on the restarted gateway) and the observer (on the other) hold
    // every message once, in order; the receiver's rejoin recovered what it missed.
    for (const [who, list] of [['receiver', received], ['observer', observed]]) {
      await waitFor(`${who} to hold every message`, () => list.length >= texts.length);
      assert.deepEqual(list.map((m) => m.text), texts, who);
      assert.deepEqual(list.map((m) => m.seq), seqs, who);
    }
    const joined = await within('the rejoin', rejoined);
    assert.equal(joined.recovered, true);
    assert.equal(joined.reset, false);
    assert.ok(receiver.reconnects >= 1);

    // Stored once each: the history holds exactly the sent texts.
    const history = await within('history', observer.history(room, { limit: 100 }));
    assert.deepEqual(history.messages.map((m) => m.text), texts);
    // The rejoin asked from where the sender stood, in its epoch.
    const rejoin = recorder.log.sent.find((s) => s.socket > 1 && s.frame.type === 'join');
    assert.equal(rejoin.frame.epoch, joined.epoch);
    assert.equal(typeof rejoin.frame.since, 'number');
  });

  it('fetches a fresh token and reconnects when the gateway closes an expired session (4401)', async () => {
    const room = unique('expiry');
    let calls = 0;
    const token = () => {
      calls += 1;
      // The first token lives two seconds; the ones after, an hour.
      return mintToken('expiring', calls === 1 ? 2 : 3600);
    };
    const c = client('expiring', 0, { token });
    await within('join', c.join(room));
    const expired = await nextEvent(c, 'state', (s) => s.state === 'reconnecting', 15_000);
    assert.equal(expired.code, 4401);
    await nextEvent(c, 'state', (s) => s.state === 'open', 15_000);
    assert.equal(calls, 2, 'asked for a token before each connection');
    // Back in its room on the new connection.
    await waitFor('the rejoin', () => c.room(room)?.joined);
    const ack = await within('the ack', c.send(room, 'after refresh'));
    assert.equal(typeof ack.seq, 'number');
  });

  it('stops at a 4401 when the token is a fixed string: a retry could only fail', async () => {
    const c = client('fixed', 0, { token: mintToken('fixed', 2) });
    const closed = await nextEvent(c, 'state', (s) => s.state === 'closed', 15_000);
    assert.equal(closed.code, 4401);
    await assert.rejects(c.send('anywhere', 'x'), { code: 'closed' });
  });

  it('resends a send whose ack was lost with the same ref, and it is stored once', async () => {
    const room = unique('dedup');
    const ref = `dedup-${randomBytes(4).toString('hex')}`;
    // The first socket never passes the ack on: it is lost with the connection.
    const recorder = recordingSocket({ drop: (f, socket) => socket === 1 && f.type === 'ack' && f.ref === ref });
    const c = client('deduper', 0, { WebSocket: recorder.WebSocket });
    await within('join', c.join(room));
    const own = nextEvent(c, 'message', (m) => m.room === room && m.text === 'once');
    const acked = c.send(room, 'once', { ref });
    const message = await within('its own message', own);
    // The message is stored (here it is); its ack was dropped. Now the link dies.
    await waitFor('the dropped ack', () => recorder.log.received.some((r) => r.frame.type === 'ack' && r.frame.ref === ref));
    c.reconnect();
    const ack = await within('the ack of the resend', acked);

    assert.equal(ack.id, message.id, 'the retry was answered with the first ack');
    assert.equal(ack.seq, message.seq);
    const sends = recorder.log.sent.filter((s) => s.frame.type === 'send');
    assert.deepEqual(sends.map((s) => [s.socket, s.frame.ref]), [
      [1, ref],
      [2, ref],
    ]);
    const history = await within('history', c.history(room));
    assert.deepEqual(history.messages.map((m) => m.text), ['once']);
  });

  it('fills a gap in seq from history and delivers in order', async () => {
    const room = unique('gap');
    // The receiver's link loses the second message (and only that frame).
    const recorder = recordingSocket({ drop: (f) => f.type === 'message' && f.text === 'g2' });
    const receiver = client('gapped', 0, { WebSocket: recorder.WebSocket });
    const sender = client('gapper', 1);
    await within('join', receiver.join(room));
    await within('join', sender.join(room));
    const got = collect(receiver, room);
    const repaired = nextEvent(receiver, 'repaired', (r) => r.room === room);
    for (const text of ['g1', 'g2', 'g3', 'g4']) await within('an ack', sender.send(room, text));
    await waitFor('all four messages', () => got.length >= 4);

    assert.deepEqual(got.map((m) => m.text), ['g1', 'g2', 'g3', 'g4']);
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4]);
    const repair = await within('the repair', repaired);
    assert.deepEqual([repair.from, repair.to, repair.fetched], [2, 2, 1]);
    assert.ok(recorder.log.sent.some((s) => s.frame.type === 'history' && s.frame.room === room && s.frame.before === 3));
    assert.equal(recorder.log.received.filter((r) => r.frame.type === 'message' && r.frame.text === 'g2').length, 1);
  });

  it('delivers a message that arrives twice only once, and a rejoin repeats nothing', async () => {
    const room = unique('twice');
    const recorder = recordingSocket({ twice: (f) => f.type === 'message' && f.text === 'first' });
    const receiver = client('twice', 0, { WebSocket: recorder.WebSocket });
    await within('join', receiver.join(room));
    const got = collect(receiver, room);
    await within('an ack', receiver.send(room, 'first'));
    await waitFor('the first message', () => got.length === 1);
    receiver.reconnect();
    await within('the rejoin', nextEvent(receiver, 'joined', (j) => j.room === room && j.rejoin));
    await within('an ack', receiver.send(room, 'second'));
    await waitFor('the second message', () => got.length >= 2);
    assert.deepEqual(got.map((m) => m.text), ['first', 'second']);
  });

  it('changes a room\'s settings with configure: members see the change and it holds', async () => {
    const room = unique('configure');
    const owner = client('owner', 0);
    const member = client('member', 1);
    await within('the owner creates the room', owner.join(room));
    await within('a member joins', member.join(room));
    const told = nextEvent(member, 'moderation', (m) => m.room === room && m.action === 'configure');
    await within('configure', owner.moderate(room, 'configure', { settings: { announce: true } }));
    const event = await within('the moderation event', told);
    assert.deepEqual(event.settings, { announce: true });
    assert.equal(event.by.id, 'owner');
    // Announce: only moderators and above may send; a member may not change it back.
    await assert.rejects(member.send(room, 'may I?'), { code: 'forbidden' });
    await assert.rejects(member.moderate(room, 'configure', { settings: { announce: false } }), { code: 'forbidden' });
    await within('configure', owner.moderate(room, 'configure', { settings: { announce: false } }));
    await within('a member\'s send', member.send(room, 'now I may'));
  });

  it('rejects a refused request with the server\'s code', async () => {
    const c = client('refused', 0);
    await nextEvent(c, 'state', (s) => s.state === 'open');
    await assert.rejects(c.send('not-joined-here', 'x'), (e) => e.name === 'WarrenError' && e.code === 'not_joined');
    await assert.rejects(c.join('Not A Room'), { code: 'bad_request' });
  });
});

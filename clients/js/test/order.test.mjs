// A room's delivery order, without a network: once each, in seq order, gaps found and
// filled, epochs respected.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { RoomOrder, HISTORY_PAGE } from '../warren-order.js';

const E = 'epoch-1';
const msg = (seq, epoch = E) => ({ room: 'r', id: `id-${epoch}-${seq}`, seq, epoch, text: `t${seq}` });
const joined = (seq, history = [], extra = {}) => ({ room: 'r', epoch: E, seq, history, recovered: false, ...extra });
const seqs = (list) => list.map((m) => m.seq);

test('a first join delivers its history in order and stands at the room\'s seq', () => {
  const order = new RoomOrder();
  const { rejoin, reset, deliver } = order.applyJoined(joined(3, [msg(3), msg(2)]));
  assert.deepEqual([rejoin, reset, seqs(deliver)], [false, false, [2, 3]]);
  assert.equal(order.seq, 3);
});

test('duplicates and stale messages are dropped', () => {
  const order = new RoomOrder();
  order.applyJoined(joined(1, [msg(1)]));
  assert.deepEqual(seqs(order.message(msg(2)).deliver), [2]);
  assert.deepEqual(seqs(order.message(msg(2)).deliver), []);
  assert.deepEqual(seqs(order.message(msg(1)).deliver), []);
});

test('a message that skips ahead waits for the gap, which is asked for and filled', () => {
  const order = new RoomOrder();
  order.applyJoined(joined(1));
  assert.deepEqual(seqs(order.message(msg(4)).deliver), []);
  assert.deepEqual(seqs(order.message(msg(5)).deliver), []);
  const gap = order.gap();
  assert.deepEqual(gap, { epoch: E, from: 2, before: 4, limit: 2 });
  order.repairing = true;
  assert.equal(order.gap(), null, 'one request at a time');
  order.repairing = false;
  // History holds 2 but not 3 (deleted): the range is known all the same.
  assert.deepEqual(seqs(order.filled(gap, [msg(2)])), [2, 4, 5]);
  assert.equal(order.seq, 5);
  assert.equal(order.gap(), null);
});

test('a gap wider than a page is fetched a page at a time', () => {
  const order = new RoomOrder();
  order.applyJoined(joined(0));
  order.message(msg(250));
  const first = order.gap();
  assert.deepEqual([first.before, first.limit], [HISTORY_PAGE + 1, HISTORY_PAGE]);
  const page = Array.from({ length: HISTORY_PAGE }, (_, i) => msg(i + 1));
  assert.equal(order.filled(first, page).length, HISTORY_PAGE);
  assert.deepEqual(order.gap(), { epoch: E, from: 101, before: 201, limit: 100 });
});

test('messages before the answer to a join are held and ordered against its history', () => {
  const order = new RoomOrder();
  assert.deepEqual(seqs(order.message(msg(4)).deliver), []);
  const { deliver } = order.applyJoined(joined(3, [msg(2), msg(3)]));
  assert.deepEqual(seqs(deliver), [2, 3, 4]);
});

test('a rejoin that recovers continues; one that cannot, or a new epoch, resets', () => {
  const order = new RoomOrder();
  order.applyJoined(joined(2, [msg(1), msg(2)]));
  order.disconnected();
  const recovered = order.applyJoined(joined(3, [msg(3)], { recovered: true }));
  assert.deepEqual([recovered.rejoin, recovered.reset, seqs(recovered.deliver)], [true, false, [3]]);

  order.disconnected();
  const lost = order.applyJoined({ ...joined(1, [msg(1, 'epoch-2')]), epoch: 'epoch-2', recovered: false });
  assert.deepEqual([lost.rejoin, lost.reset, seqs(lost.deliver)], [true, true, [1]]);
  assert.equal(order.epoch, 'epoch-2');
});

test('a live message from a new epoch asks for a join from scratch, which resets', () => {
  const order = new RoomOrder();
  order.applyJoined(joined(5, [msg(5)]));
  const { deliver, restart } = order.message(msg(1, 'epoch-2'));
  assert.deepEqual([seqs(deliver), restart, order.epoch], [[], true, null]);
  const again = order.applyJoined({ ...joined(1, [msg(1, 'epoch-2')]), epoch: 'epoch-2' });
  assert.deepEqual([again.reset, seqs(again.deliver)], [true, [1]]);
});

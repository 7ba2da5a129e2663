// The reconnect wait: full jitter under a ceiling that doubles per attempt up to a cap.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { backoffDelay, FINAL_CLOSE_CODES, WarrenClient } from '../warren.js';

const OPTIONS = { baseMs: 500, capMs: 10_000 };

test('the ceiling doubles per attempt and stops at the cap', () => {
  const highest = (attempt) => backoffDelay(attempt, OPTIONS, () => 0.999_999);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(highest), [499, 999, 1999, 3999, 7999, 9999, 9999]);
  assert.equal(highest(1_000), 9999, 'a huge attempt count neither overflows nor passes the cap');
});

test('full jitter: any wait from zero up to the ceiling', () => {
  assert.equal(backoffDelay(4, OPTIONS, () => 0), 0);
  assert.equal(backoffDelay(4, OPTIONS, () => 0.5), 4000);
  const seen = Array.from({ length: 2_000 }, () => backoffDelay(3, OPTIONS));
  assert.ok(seen.every((d) => d >= 0 && d < 4000), 'within [0, 4000)');
  // Spread over the range, not bunched: both quarters at the ends are reached.
  assert.ok(seen.some((d) => d < 1000) && seen.some((d) => d >= 3000));
});

test('the close codes that mean "stop" are the ones the protocol says cannot be retried', () => {
  for (const code of [1000, 1002, 1003, 1007, 1008, 1009]) assert.ok(FINAL_CLOSE_CODES.has(code), `${code}`);
  for (const code of [1001, 1006, 1011, 1012, 1013, 4401]) assert.ok(!FINAL_CLOSE_CODES.has(code), `${code}`);
});

test('a WebSocket that is not a constructor is refused with a hint at how to get one', () => {
  assert.throws(() => new WarrenClient({ url: 'ws://127.0.0.1:1/ws', WebSocket: {} }), /WebSocket/);
});

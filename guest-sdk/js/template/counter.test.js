// The counter's handlers, run without a host: node --test
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness } from './liveswap-guest.js';
import { Counter } from './counter.js';

test('numbers in order are counted', () => {
  const h = new Harness(Counter);
  for (const n of [1, 2, 3]) h.deliver('num', n, { sender: 'T' });
  assert.deepEqual(h.logs.at(-1), ['info', 'got 3 from T']);
  assert.deepEqual(h.module.state.last, { T: 3 });
});

test('a gap is reported', () => {
  const h = new Harness(Counter);
  h.deliver('num', 1, { sender: 'T' });
  h.deliver('num', 3, { sender: 'T' });
  assert.ok(h.logs.some(([l, line]) => l === 'warn' && line === 'GAP from T: 3 after 1'));
});

test('the state survives a handover', () => {
  const h = new Harness(Counter);
  h.deliver('num', 1, { sender: 'T' });
  const h2 = h.handover(Counter);
  h2.deliver('num', 2, { sender: 'T' });
  assert.deepEqual(h2.logs.at(-1), ['info', 'got 2 from T']);
});

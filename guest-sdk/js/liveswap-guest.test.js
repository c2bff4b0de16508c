// The helper's own tests, without a host: node --test liveswap-guest.test.js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestError, Harness, Module, decode, encode, send } from './liveswap-guest.js';
import { Counter } from './template/counter.js';

class V1 extends Module {
  static VERSION = '1';
  initial() { return { count: 0 }; }
  static handlers = {
    tick() {
      this.state.count += 1;
      send('B', 'num', this.state.count);
    },
  };
}

class V2 extends V1 {
  static VERSION = '2';
  static STATE_VERSION = 2;
  static migrate(from, old) { return { count: old.count, since: from }; }
}

test('CBOR round trips', () => {
  for (const v of [0, 23, 24, 255, 65536, 2 ** 40, -1, -500, 'héllo', [1, [2, 'x']], { a: { b: [true, false, null] } }, 1.5]) {
    assert.deepEqual(decode(encode(v)), v);
  }
  assert.deepEqual(decode(encode(new Uint8Array([0, 1]))), new Uint8Array([0, 1]));
});

test('small numbers encode as the probe and serde write them', () => {
  assert.deepEqual(encode(7), new Uint8Array([0x07]));
  assert.deepEqual(encode(300), new Uint8Array([0x19, 0x01, 0x2c]));
});

test('truncated CBOR is an error', () => {
  assert.throws(() => decode(new Uint8Array([0x19, 0x01])), /truncated/);
});

test('handlers by kind, and an unknown kind', () => {
  const h = new Harness(V1);
  h.deliver('tick');
  h.deliver('tick');
  assert.deepEqual(h.sent.map(([to, kind, p, body]) => [to, kind, p, [...body]]), [['B', 'num', 1, [1]], ['B', 'num', 1, [2]]]);
  assert.throws(() => h.deliver('nope'), (e) => e instanceof GuestError && /no handler for `nope`/.test(e.message));
});

test('a newer version migrates and an older one refuses', () => {
  const h = new Harness(V1);
  h.deliver('tick');
  const h2 = h.handover(V2);
  assert.deepEqual(h2.module.state, { count: 1, since: 1 });
  assert.throws(() => h2.handover(V1), /this state is version 2/);
});

test("the state envelope is the Rust SDK's", () => {
  assert.deepEqual(decode(new Harness(V1).module.save()), { 'liveswap-state': 1, state: { count: 0 } });
});

test('a body that does not decode names the message', () => {
  assert.throws(
    () => new Harness(Counter).deliver('num', null, { sender: 'T', body: new Uint8Array([0xff, 0xff]) }),
    /the body of `num` from T does not decode/,
  );
});

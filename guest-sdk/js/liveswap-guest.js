// Write liveswap modules in JavaScript (built with componentize-js).
//
// A module is a class with handlers by message kind and a versioned state:
//
//   import { Module, info } from './liveswap-guest.js';
//   export class Counter extends Module {
//     static VERSION = 'js-1';
//     initial(config) { return { last: {} }; }
//     static handlers = {
//       num(msg) { info(`got ${msg.value()} from ${msg.sender}`); },
//     };
//   }
//
// and app.js, the component's entry, binds it to the host:
//
//   import * as host from 'liveswap:module/host@0.1.0';
//   import { exportModule } from './liveswap-guest.js';
//   import { Counter } from './counter.js';
//   export const { info, init, service, enable, disable, putState, getState } =
//     exportModule(Counter, host);
//
// `this.state` is what moves to the next version: CBOR in the Rust SDK's
// envelope ({"liveswap-state": V, "state": S}), so Rust, Python and
// JavaScript versions of a module take over from each other when their
// states have the same fields. A newer STATE_VERSION reads an older state
// through `static migrate`; an older one refuses a newer state.
//
// A handler that throws a GuestError answers the message with that error
// (logged against the module; the next message is served). Anything else
// thrown is a bug: the instance traps and the host's recovery takes over.
//
// `Harness` runs a module without a host, for unit tests (node --test).

/** An error answer to a message, or a refused init or state. */
export class GuestError extends Error {}

/** One message: sender, kind, proto, body (bytes). */
export class Message {
  constructor(sender, kind, proto, body) {
    Object.assign(this, { sender, kind, proto, body: Uint8Array.from(body) });
  }
  /** The body, decoded from CBOR; a GuestError names the message if it is not. */
  value() {
    try {
      return decode(this.body);
    } catch (e) {
      throw new GuestError(`the body of \`${this.kind}\` from ${this.sender} does not decode: ${e.message}`);
    }
  }
}

/** Subclass it; set VERSION (and SPEAKS, ACCEPTS, STATE_VERSION) and handlers. */
export class Module {
  static VERSION = '0';
  static SPEAKS = [1];
  static ACCEPTS = [1];
  static STATE_VERSION = 1;
  static handlers = {};

  constructor(state) {
    this.state = state;
  }
  /** The state of a newly loaded module, from its config bytes. */
  initial(config) {
    return {};
  }
  /** A message no handler takes: an error by default. */
  other(msg) {
    throw new GuestError(`${this.constructor.VERSION} has no handler for \`${msg.kind}\``);
  }
  enable() {}
  disable() {}
  /** Read an older state (version `from`); none by default. */
  static migrate(from, old) {
    throw new GuestError(
      `${this.VERSION} reads state version ${this.STATE_VERSION} and has no migration from state version ${from}`,
    );
  }

  static create(config) {
    const m = new this({});
    m.state = m.initial(config);
    return m;
  }
  service(msg) {
    const h = this.constructor.handlers[msg.kind];
    return h ? h.call(this, msg) : this.other(msg);
  }
  save() {
    return encode(new Map([['liveswap-state', this.constructor.STATE_VERSION], ['state', this.state]]));
  }
  static restore(bytes) {
    let version, state;
    try {
      const got = decode(bytes);
      version = got['liveswap-state'];
      state = got.state;
      if (typeof version !== 'number' || state === undefined) throw new Error('no `liveswap-state` and `state`');
    } catch (e) {
      throw new GuestError(
        `${this.VERSION} cannot read this state: it is not a typed liveswap state (a map with \`liveswap-state\` and \`state\`): ${e.message}`,
      );
    }
    const ours = this.STATE_VERSION;
    if (version === ours) return new this(state);
    if (version > ours) {
      throw new GuestError(
        `${this.VERSION} reads state version ${ours} and older; this state is version ${version}, written by a newer version: use a version that knows it`,
      );
    }
    return new this(this.migrate(version, state));
  }
}

// The host: the component's imports, or a recorder in tests.
class Recorder {
  constructor() {
    Object.assign(this, { sent: [], published: [], logs: [], timers: {}, subscriptions: new Set() });
  }
  send(to, msg) { this.sent.push([to, msg.kind, msg.proto, msg.body]); }
  publish(event, body) { this.published.push([event, decode(body)]); }
  subscribe(p, e) { this.subscriptions.add(`${p} ${e}`); }
  unsubscribe(p, e) { this.subscriptions.delete(`${p} ${e}`); }
  setTimer(name, ms) { this.timers[name] = ms; }
  cancelTimer(name) { delete this.timers[name]; }
  log(level, line) { this.logs.push([level, line]); }
  selfName() { return 'test'; }
}

let host = new Recorder();
let proto = 1;

function call(what, f) {
  try {
    return f();
  } catch (e) {
    throw new GuestError(`${what}: ${e.payload ?? e.message ?? e}`);
  }
}

/** Send bytes as a message of `kind` to module `to`. */
export function sendBytes(to, kind, p, body) {
  call(`send ${kind} to ${to}`, () => host.send(to, { from: '', kind, proto: p, body }));
}
/** Send `value` (as CBOR) in the highest protocol this version speaks. */
export function send(to, kind, value) { sendBytes(to, kind, proto, encode(value)); }
/** `send` in protocol `p`. */
export function sendAs(to, kind, p, value) { sendBytes(to, kind, p, encode(value)); }
/** Publish `value` (as CBOR) as `event` to this module's subscribers. */
export function publish(event, value) { call(`publish ${event}`, () => host.publish(event, encode(value))); }
export function subscribe(publisher, event) { call(`subscribe ${publisher} ${event}`, () => host.subscribe(publisher, event)); }
export function unsubscribe(publisher, event) { host.unsubscribe(publisher, event); }
/** A message of kind `name` from $timer every `ms` milliseconds. */
export function setTimer(name, ms) { host.setTimer(name, Math.max(1, Math.min(Math.floor(ms), 2 ** 32 - 1))); }
export function cancelTimer(name) { host.cancelTimer(name); }
export function selfName() { return host.selfName(); }
/** Log `line` at `level` ('trace', 'debug', 'info', 'warn', 'error'). */
export function log(level, line) { host.log(level, line); }
export const debug = (line) => log('debug', line);
export const info = (line) => log('info', line);
export const warn = (line) => log('warn', line);
export const error = (line) => log('error', line);

/** The component's exports for module class `M`, on the host's imports. */
export function exportModule(M, imports) {
  host = imports;
  let held = null;
  const current = () => {
    if (!held) throw 'the module has no state yet: neither init nor get-state ran';
    return held;
  };
  // A GuestError is the call's error; anything else traps.
  const answer = (f) => {
    try {
      return f();
    } catch (e) {
      if (e instanceof GuestError) throw e.message;
      throw e;
    }
  };
  return {
    info() {
      proto = Math.max(1, ...M.SPEAKS);
      return { version: M.VERSION, speaks: [...M.SPEAKS], accepts: [...M.ACCEPTS] };
    },
    init(config) { held = answer(() => M.create(config)); },
    service(msg) {
      const m = current();
      answer(() => m.service(new Message(msg.from, msg.kind, msg.proto, msg.body)));
    },
    enable() { held?.enable(); },
    disable() { held?.disable(); },
    putState() { const m = current(); return answer(() => m.save()); },
    getState(state) { held = answer(() => M.restore(state)); },
  };
}

/** A module run without a host: deliver messages, look at what it did. */
export class Harness {
  constructor(M, { config = new Uint8Array(), module } = {}) {
    host = this.host = new Recorder();
    this.module = module ?? M.create(config);
  }
  /** Serve one message; a GuestError from the handler is thrown. */
  deliver(kind, value = null, { sender = '$admin', proto: p = 1, body } = {}) {
    return this.module.service(new Message(sender, kind, p, body ?? encode(value)));
  }
  /** A Harness of `M` holding this module's state, moved as a Replace moves it. */
  handover(M) {
    return new Harness(M, { module: M.restore(this.module.save()) });
  }
  get sent() { return this.host.sent; }
  get logs() { return this.host.logs; }
  get timers() { return this.host.timers; }
}

// CBOR (RFC 8949): what states and bodies need. Maps decode to objects.
export function encode(v) {
  const out = [];
  enc(v, out);
  return Uint8Array.from(out);
}

function head(major, n, out) {
  n = BigInt(n);
  const m = major << 5;
  if (n < 24n) out.push(m | Number(n));
  else if (n < 0x100n) out.push(m | 24, Number(n));
  else if (n < 0x10000n) out.push(m | 25, ...bytesOf(n, 2));
  else if (n < 0x100000000n) out.push(m | 26, ...bytesOf(n, 4));
  else if (n < 1n << 64n) out.push(m | 27, ...bytesOf(n, 8));
  else throw new Error(`integer ${n} is too large for CBOR`);
}

function bytesOf(n, w) {
  const b = [];
  for (let i = w - 1; i >= 0; i--) b.push(Number((n >> BigInt(8 * i)) & 0xffn));
  return b;
}

function enc(v, out) {
  if (v === null || v === undefined) out.push(0xf6);
  else if (v === true) out.push(0xf5);
  else if (v === false) out.push(0xf4);
  else if (typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v))) {
    const n = BigInt(v);
    if (n >= 0n) head(0, n, out);
    else head(1, -1n - n, out);
  } else if (typeof v === 'number') {
    const b = new DataView(new ArrayBuffer(8));
    b.setFloat64(0, v);
    out.push(0xfb, ...new Uint8Array(b.buffer));
  } else if (v instanceof Uint8Array) {
    head(2, v.length, out);
    out.push(...v);
  } else if (typeof v === 'string') {
    const b = new TextEncoder().encode(v);
    head(3, b.length, out);
    out.push(...b);
  } else if (Array.isArray(v)) {
    head(4, v.length, out);
    v.forEach((x) => enc(x, out));
  } else if (v instanceof Map) {
    head(5, v.size, out);
    v.forEach((x, k) => { enc(k, out); enc(x, out); });
  } else if (typeof v === 'object') {
    const keys = Object.keys(v);
    head(5, keys.length, out);
    keys.forEach((k) => { enc(k, out); enc(v[k], out); });
  } else throw new Error(`cannot encode ${typeof v} as CBOR`);
}

/** One CBOR item from `bytes` (all of them); throws if it is not. */
export function decode(bytes) {
  const b = Uint8Array.from(bytes);
  const [v, end] = dec(b, 0);
  if (end !== b.length) throw new Error(`${b.length - end} byte(s) after the item`);
  return v;
}

function need(b, i, n) {
  if (i + n > b.length) throw new Error('truncated');
}

function dec(b, i) {
  need(b, i, 1);
  const major = b[i] >> 5, ai = b[i] & 0x1f;
  i += 1;
  if (major === 7) {
    if (ai === 20) return [false, i];
    if (ai === 21) return [true, i];
    if (ai === 22 || ai === 23) return [null, i];
    const w = { 25: 2, 26: 4, 27: 8 }[ai];
    if (!w) throw new Error(`unsupported simple value ${ai}`);
    need(b, i, w);
    const d = new DataView(b.buffer, b.byteOffset + i, w);
    const f = w === 2 ? half(d.getUint16(0)) : w === 4 ? d.getFloat32(0) : d.getFloat64(0);
    return [f, i + w];
  }
  let n;
  if (ai < 24) n = BigInt(ai);
  else if (ai <= 27) {
    const w = 1 << (ai - 24);
    need(b, i, w);
    n = 0n;
    for (let k = 0; k < w; k++) n = (n << 8n) | BigInt(b[i + k]);
    i += w;
  } else throw new Error('indefinite lengths are not supported');
  const small = (x) => (x <= BigInt(Number.MAX_SAFE_INTEGER) && x >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x);
  switch (major) {
    case 0: return [small(n), i];
    case 1: return [small(-1n - n), i];
    case 2: need(b, i, Number(n)); return [b.slice(i, i + Number(n)), i + Number(n)];
    case 3: need(b, i, Number(n)); return [new TextDecoder().decode(b.slice(i, i + Number(n))), i + Number(n)];
    case 4: {
      const a = [];
      for (let k = 0n; k < n; k++) { let x; [x, i] = dec(b, i); a.push(x); }
      return [a, i];
    }
    case 5: {
      const o = {};
      for (let k = 0n; k < n; k++) { let key, x; [key, i] = dec(b, i); [x, i] = dec(b, i); o[key] = x; }
      return [o, i];
    }
    default: return dec(b, i); // a tag: its content
  }
}

function half(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

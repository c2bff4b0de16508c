// A liveswap module: checks that each sender's numbers arrive in order.
import { Module, info, warn } from './liveswap-guest.js';

export class Counter extends Module {
  static VERSION = 'js-1';

  // The state the host carries to the next version: the last number from
  // each sender (the same fields as the Rust counter's).
  initial(config) {
    return { last: {} };
  }

  static handlers = {
    num(msg) {
      const n = msg.value();
      const last = this.state.last[msg.sender] ?? 0;
      if (n !== last + 1) warn(`GAP from ${msg.sender}: ${n} after ${last}`);
      this.state.last[msg.sender] = n;
      info(`got ${n} from ${msg.sender}`);
    },
  };
}

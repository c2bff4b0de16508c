// The component: the counter, bound to the host's imports.
import * as host from 'liveswap:module/host@0.1.0';
import { exportModule } from './liveswap-guest.js';
import { Counter } from './counter.js';

export const { info, init, service, enable, disable, putState, getState } =
  exportModule(Counter, host);

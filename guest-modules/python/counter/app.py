"""A liveswap module in Python: counts what it serves, per sender, and
checks that numbers from each sender arrive consecutively (as the probe
does). Its state is that count, as JSON, so it moves across swaps and
restarts.

Messages: kind `num` with a CBOR unsigned number (small ones only, as the
probe sends them), kind `do` with body `report` (log a summary line)."""

import json

import wit_world
from wit_world.imports import host, types
from componentize_py_types import Err


def _cbor_uint(body: bytes) -> int:
    if not body:
        raise Err("empty body")
    head, info = body[0] >> 5, body[0] & 0x1F
    if head != 0:
        raise Err("not an unsigned number")
    if info < 24:
        return info
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or len(body) < 1 + width:
        raise Err("a bad number")
    return int.from_bytes(body[1 : 1 + width], "big")


# The module's state. Module-level: componentize-py makes a new WitWorld
# object for each call into the component.
STATE = {"served": 0, "seen": {}}


class WitWorld(wit_world.WitWorld):
    def info(self) -> types.ModuleInfo:
        return types.ModuleInfo(version="py-1.0", speaks=[1], accepts=[1])

    def init(self, config: bytes) -> None:
        pass

    def service(self, msg: types.Message) -> None:
        STATE["served"] += 1
        seen = STATE["seen"]
        if msg.kind == "num":
            n = _cbor_uint(msg.body)
            expected = seen.get(msg.from_, 0) + 1
            if n != expected:
                what = "GAP" if n > expected else "DUP"
                host.log(types.Level.WARN, f"{what} from {msg.from_}: expected {expected}, got {n}")
            if n >= expected:
                seen[msg.from_] = n
        elif msg.kind == "do" and msg.body == b"report":
            listed = ",".join(f"{k}:{v}" for k, v in sorted(seen.items()))
            host.log(types.Level.INFO, f"report served={STATE['served']} seen={listed}")

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def put_state(self) -> bytes:
        return json.dumps(STATE).encode()

    def get_state(self, state: bytes) -> None:
        s = json.loads(state)
        STATE["served"] = s["served"]
        STATE["seen"] = s["seen"]

"""A liveswap module: checks that each sender's numbers arrive in order."""
from liveswap_guest import Module, export, info, on, warn


class Counter(Module):
    VERSION = "py-1"

    def initial(self, config):
        # The state the host carries to the next version: the last number
        # from each sender (the same fields as the Rust counter's).
        return {"last": {}}

    @on("num")
    def num(self, msg):
        n, last = msg.value(), self.state["last"].get(msg.sender, 0)
        if n != last + 1:
            warn(f"GAP from {msg.sender}: {n} after {last}")
        self.state["last"][msg.sender] = n
        info(f"got {n} from {msg.sender}")


WitWorld = export(Counter)

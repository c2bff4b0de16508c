"""Write liveswap modules in Python (built with componentize-py).

A module is a class with handlers by message kind and a versioned state:

    from liveswap_guest import Module, on, info, export

    class Counter(Module):
        VERSION = "py-1"

        def initial(self, config):
            return {"last": {}}

        @on("num")
        def num(self, msg):
            self.state["last"][msg.sender] = msg.value()
            info(f"got {msg.value()} from {msg.sender}")

    WitWorld = export(Counter)

`self.state` is what moves to the next version: CBOR, in the same envelope
as the Rust SDK's typed state ({"liveswap-state": V, "state": S}), so a
Rust version and a Python version of a module can take over from each
other when their states have the same fields. A newer STATE_VERSION reads
an older state through `migrate`; an older one refuses a newer state.

A handler that raises `Error` answers the message with that error (logged
against the module; the next message is served). Any other exception is a
bug: the instance traps and the host's recovery takes over.

`Harness` runs a module without a host, for unit tests.
"""

import struct

__all__ = [
    "Module", "Message", "Error", "on", "export", "send", "send_as", "publish",
    "subscribe", "unsubscribe", "set_timer", "cancel_timer", "self_name",
    "log", "debug", "info", "warn", "error", "encode", "decode", "Harness",
]


class Error(Exception):
    """An error answer to a message, or a refused init or state."""


def on(kind):
    """Mark a method as the handler of messages of `kind`."""

    def mark(f):
        f._liveswap_kind = kind
        return f

    return mark


class Message:
    """One message: `sender`, `kind`, `proto`, `body` (bytes)."""

    __slots__ = ("sender", "kind", "proto", "body")

    def __init__(self, sender, kind, proto, body):
        self.sender, self.kind, self.proto, self.body = sender, kind, proto, bytes(body)

    def value(self):
        """The body, decoded from CBOR; an Error names the message if it is not."""
        try:
            return decode(self.body)
        except ValueError as e:
            raise Error(f"the body of `{self.kind}` from {self.sender} does not decode: {e}")


class Module:
    """Subclass it; set VERSION (and SPEAKS, ACCEPTS, STATE_VERSION)."""

    VERSION = "0"
    SPEAKS = (1,)
    ACCEPTS = (1,)
    STATE_VERSION = 1

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls._handlers = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                kind = getattr(attr, "_liveswap_kind", None)
                if kind is not None:
                    cls._handlers[kind] = attr

    def __init__(self, state):
        self.state = state

    # What a module may override.
    def initial(self, config):
        """The state of a newly loaded module, from its config bytes."""
        return {}

    def other(self, msg):
        """A message no handler takes: an error by default."""
        raise Error(f"{self.VERSION} has no handler for `{msg.kind}`")

    def enable(self):
        pass

    def disable(self):
        pass

    @classmethod
    def migrate(cls, from_version, old):
        """Read an older state (version `from_version`); none by default."""
        raise Error(
            f"{cls.VERSION} reads state version {cls.STATE_VERSION} and has no "
            f"migration from state version {from_version}"
        )

    # What the export calls.
    @classmethod
    def create(cls, config):
        m = cls(None)
        m.state = m.initial(bytes(config))
        return m

    def service(self, msg):
        handler = self._handlers.get(msg.kind)
        if handler is None:
            return self.other(msg)
        return handler(self, msg)

    def save(self):
        return encode({"liveswap-state": self.STATE_VERSION, "state": self.state})

    @classmethod
    def restore(cls, data):
        try:
            got = decode(bytes(data))
            version, state = got["liveswap-state"], got["state"]
        except (ValueError, KeyError, TypeError) as e:
            raise Error(
                f"{cls.VERSION} cannot read this state: it is not a typed liveswap "
                f"state (a map with `liveswap-state` and `state`): {e}"
            )
        ours = cls.STATE_VERSION
        if version == ours:
            return cls(state)
        if version > ours:
            raise Error(
                f"{cls.VERSION} reads state version {ours} and older; this state is "
                f"version {version}, written by a newer version: use a version that knows it"
            )
        return cls(cls.migrate(version, state))


# The host: the component's imports, or a recorder outside a component;
# both answer the same calls.
class _Recorder:
    def __init__(self):
        self.sent, self.published, self.logs, self.timers = [], [], [], {}
        self.subscriptions = set()

    def send(self, to, kind, proto, body):
        self.sent.append((to, kind, proto, body))

    def publish(self, event, body):
        self.published.append((event, decode(body)))

    def subscribe(self, publisher, event):
        self.subscriptions.add((publisher, event))

    def unsubscribe(self, publisher, event):
        self.subscriptions.discard((publisher, event))

    def set_timer(self, name, every_ms):
        self.timers[name] = every_ms

    def cancel_timer(self, name):
        self.timers.pop(name, None)

    def self_name(self):
        return "test"

    def log(self, level, line):
        self.logs.append((level, line))


class _WitHost:
    def __init__(self, host, types):
        self.host, self.types = host, types

    def send(self, to, kind, proto, body):
        self.host.send(to, self.types.Message(from_="", kind=kind, proto=proto, body=body))

    def publish(self, event, body):
        self.host.publish(event, body)

    def subscribe(self, publisher, event):
        self.host.subscribe(publisher, event)

    def unsubscribe(self, publisher, event):
        self.host.unsubscribe(publisher, event)

    def set_timer(self, name, every_ms):
        self.host.set_timer(name, every_ms)

    def cancel_timer(self, name):
        self.host.cancel_timer(name)

    def self_name(self):
        return self.host.self_name()

    def log(self, level, line):
        self.host.log(getattr(self.types.Level, level.upper()), line)


# Imported when the app is (componentize-py runs that at build time): a
# component cannot import modules later, it has no file system for them.
try:
    from wit_world.imports import host as _wit_host, types as _wit_types

    _host = _WitHost(_wit_host, _wit_types)
except ImportError:
    _host = _Recorder()
_proto = 1


def _call(what, f, *args):
    """A host call; its error (componentize-py's Err) as an Error naming it."""
    try:
        return f(*args)
    except Exception as e:
        raise Error(f"{what}: {getattr(e, 'value', e)}")


def send_bytes(to, kind, proto, body):
    """Send bytes as a message of `kind` to module `to`."""
    _call(f"send {kind} to {to}", _host.send, to, kind, proto, bytes(body))


def send(to, kind, value):
    """Send `value` (as CBOR) in the highest protocol this version speaks."""
    send_bytes(to, kind, _proto, encode(value))


def send_as(to, kind, proto, value):
    """`send` in protocol `proto`."""
    send_bytes(to, kind, proto, encode(value))


def publish(event, value):
    """Publish `value` (as CBOR) as `event` to this module's subscribers."""
    _call(f"publish {event}", _host.publish, event, encode(value))


def subscribe(publisher, event):
    _call(f"subscribe {publisher} {event}", _host.subscribe, publisher, event)


def unsubscribe(publisher, event):
    _host.unsubscribe(publisher, event)


def set_timer(name, every_ms):
    """A message of kind `name` from $timer every `every_ms` milliseconds."""
    _host.set_timer(name, max(1, min(int(every_ms), 2**32 - 1)))


def cancel_timer(name):
    _host.cancel_timer(name)


def self_name():
    return _host.self_name()


def log(level, line):
    """Log `line` at `level` ("trace", "debug", "info", "warn", "error")."""
    _host.log(level, line)


def debug(line):
    log("debug", line)


def info(line):
    log("info", line)


def warn(line):
    log("warn", line)


def error(line):
    log("error", line)


def export(cls):
    """The WitWorld class componentize-py needs, for module class `cls`
    (None outside a component, so that tests can import the app)."""
    try:
        import wit_world
        from wit_world.imports import types
        from componentize_py_types import Err
    except ImportError:
        return None
    held = []

    def err(f, *args):
        try:
            return f(*args)
        except Error as e:
            raise Err(str(e))

    def current():
        if not held:
            raise Err("the module has no state yet: neither init nor get-state ran")
        return held[0]

    def keep(m):
        held[:] = [m]

    class WitWorld(wit_world.WitWorld):
        def info(self):
            global _proto
            _proto = max(cls.SPEAKS, default=1)
            return types.ModuleInfo(
                version=cls.VERSION, speaks=list(cls.SPEAKS), accepts=list(cls.ACCEPTS)
            )

        def init(self, config):
            keep(err(cls.create, config))

        def service(self, msg):
            m = Message(msg.from_, msg.kind, msg.proto, msg.body)
            err(current().service, m)

        def enable(self):
            if held:
                held[0].enable()

        def disable(self):
            if held:
                held[0].disable()

        def put_state(self):
            return err(current().save)

        def get_state(self, state):
            keep(err(cls.restore, state))

    return WitWorld


class Harness:
    """A module run without a host: deliver messages, look at what it did.

        h = Harness(Counter)
        h.deliver("num", 1, sender="T")
        assert h.logs[-1] == ("info", "got 1 from T")
        h2 = h.handover(CounterV2)   # the state moved as a swap moves it
    """

    def __init__(self, cls, config=b"", module=None):
        global _host
        _host = self.host = _Recorder()
        self.module = module if module is not None else cls.create(config)

    def deliver(self, kind, value=None, sender="$admin", proto=1, body=None):
        """Serve one message; an Error from the handler is raised."""
        raw = encode(value) if body is None else body
        return self.module.service(Message(sender, kind, proto, raw))

    def handover(self, new_cls):
        """A Harness of `new_cls` holding this module's state, moved as a
        Replace moves it (an Error if the new version refuses it)."""
        return Harness(new_cls, module=new_cls.restore(self.module.save()))

    @property
    def sent(self):
        return self.host.sent

    @property
    def logs(self):
        return self.host.logs

    @property
    def timers(self):
        return self.host.timers


# CBOR (RFC 8949): what states and bodies need.
def encode(v):
    """`v` (int, str, bytes, bool, None, float, list, tuple, dict) as CBOR."""
    out = bytearray()
    _enc(v, out)
    return bytes(out)


def _head(major, n, out):
    if n < 24:
        out.append(major << 5 | n)
    elif n < 1 << 8:
        out += bytes((major << 5 | 24, n))
    elif n < 1 << 16:
        out.append(major << 5 | 25)
        out += n.to_bytes(2, "big")
    elif n < 1 << 32:
        out.append(major << 5 | 26)
        out += n.to_bytes(4, "big")
    elif n < 1 << 64:
        out.append(major << 5 | 27)
        out += n.to_bytes(8, "big")
    else:
        raise ValueError(f"integer {n} is too large for CBOR")


def _enc(v, out):
    if v is None:
        out.append(0xF6)
    elif v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif isinstance(v, int):
        _head(0, v, out) if v >= 0 else _head(1, -1 - v, out)
    elif isinstance(v, float):
        out.append(0xFB)
        out += struct.pack(">d", v)
    elif isinstance(v, (bytes, bytearray)):
        _head(2, len(v), out)
        out += v
    elif isinstance(v, str):
        b = v.encode()
        _head(3, len(b), out)
        out += b
    elif isinstance(v, (list, tuple)):
        _head(4, len(v), out)
        for x in v:
            _enc(x, out)
    elif isinstance(v, dict):
        _head(5, len(v), out)
        for k, x in v.items():
            _enc(k, out)
            _enc(x, out)
    else:
        raise ValueError(f"cannot encode {type(v).__name__} as CBOR")


def decode(data):
    """One CBOR item from `data` (all of it); ValueError if it is not."""
    v, end = _dec(bytes(data), 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} byte(s) after the item")
    return v


def _dec(b, i):
    if i >= len(b):
        raise ValueError("truncated")
    major, info = b[i] >> 5, b[i] & 0x1F
    i += 1
    if major == 7:
        simple = {20: False, 21: True, 22: None, 23: None}
        if info in simple:
            return simple[info], i
        fmt = {25: (">e", 2), 26: (">f", 4), 27: (">d", 8)}.get(info)
        if fmt is None:
            raise ValueError(f"unsupported simple value {info}")
        if i + fmt[1] > len(b):
            raise ValueError("truncated")
        return struct.unpack(fmt[0], b[i : i + fmt[1]])[0], i + fmt[1]
    if info < 24:
        n = info
    elif info <= 27:
        w = 1 << (info - 24)
        if i + w > len(b):
            raise ValueError("truncated")
        n, i = int.from_bytes(b[i : i + w], "big"), i + w
    else:
        raise ValueError("indefinite lengths are not supported")
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major in (2, 3):
        if i + n > len(b):
            raise ValueError("truncated")
        raw = b[i : i + n]
        return (raw if major == 2 else raw.decode()), i + n
    if major == 4:
        items = []
        for _ in range(n):
            x, i = _dec(b, i)
            items.append(x)
        return items, i
    if major == 5:
        d = {}
        for _ in range(n):
            k, i = _dec(b, i)
            d[k], i = _dec(b, i)
        return d, i
    # A tag: its content.
    return _dec(b, i)

"""The helper's own tests, without a host: python3 -m unittest (here)."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "template"))

import liveswap_guest as lg
from liveswap_guest import Error, Harness, Module, decode, encode, on


class V1(Module):
    VERSION = "1"

    def initial(self, config):
        return {"count": 0}

    @on("tick")
    def tick(self, msg):
        self.state["count"] += 1
        lg.send("B", "num", self.state["count"])


class V2(V1):
    VERSION = "2"
    STATE_VERSION = 2

    @classmethod
    def migrate(cls, from_version, old):
        return {"count": old["count"], "since": from_version}


class Helper(unittest.TestCase):
    def test_cbor_round_trips(self):
        for v in [0, 23, 24, 255, 65536, 2**40, -1, -500, "héllo", b"\x00\x01",
                  [1, [2, "x"]], {"a": {"b": [True, False, None]}}, 1.5]:
            self.assertEqual(decode(encode(v)), v)

    def test_cbor_matches_the_rust_encoding_of_small_numbers(self):
        # What the probe and serde's CBOR write for 7 and 300.
        self.assertEqual(encode(7), b"\x07")
        self.assertEqual(encode(300), b"\x19\x01\x2c")

    def test_truncated_cbor_is_an_error(self):
        with self.assertRaises(ValueError):
            decode(b"\x19\x01")

    def test_handlers_by_kind_and_an_unknown_kind(self):
        h = Harness(V1)
        h.deliver("tick")
        h.deliver("tick")
        self.assertEqual(h.sent, [("B", "num", 1, b"\x01"), ("B", "num", 1, b"\x02")])
        with self.assertRaises(Error) as e:
            h.deliver("nope")
        self.assertIn("no handler for `nope`", str(e.exception))

    def test_a_newer_version_migrates_and_an_older_one_refuses(self):
        h = Harness(V1)
        h.deliver("tick")
        h2 = h.handover(V2)
        self.assertEqual(h2.module.state, {"count": 1, "since": 1})
        with self.assertRaises(Error) as e:
            h2.handover(V1)
        self.assertIn("this state is version 2", str(e.exception))

    def test_the_state_envelope_is_the_rust_sdks(self):
        saved = decode(Harness(V1).module.save())
        self.assertEqual(saved, {"liveswap-state": 1, "state": {"count": 0}})

    def test_a_body_that_does_not_decode_names_the_message(self):
        from app import Counter
        with self.assertRaises(Error) as e:
            Harness(Counter).deliver("num", body=b"\xff\xff", sender="T")
        self.assertIn("the body of `num` from T does not decode", str(e.exception))


if __name__ == "__main__":
    unittest.main()

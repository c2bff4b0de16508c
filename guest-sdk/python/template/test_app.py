"""The counter's handlers, run without a host: python3 -m unittest"""
import unittest

from liveswap_guest import Harness, encode
from app import Counter


class CounterTest(unittest.TestCase):
    def test_numbers_in_order_are_counted(self):
        h = Harness(Counter)
        for n in (1, 2, 3):
            h.deliver("num", n, sender="T")
        self.assertEqual(h.logs[-1], ("info", "got 3 from T"))
        self.assertEqual(h.module.state["last"], {"T": 3})

    def test_a_gap_is_reported(self):
        h = Harness(Counter)
        h.deliver("num", 1, sender="T")
        h.deliver("num", 3, sender="T")
        self.assertIn(("warn", "GAP from T: 3 after 1"), h.logs)

    def test_the_state_survives_a_handover(self):
        h = Harness(Counter)
        h.deliver("num", 1, sender="T")
        h2 = h.handover(Counter)
        h2.deliver("num", 2, sender="T")
        self.assertEqual(h2.logs[-1], ("info", "got 2 from T"))


if __name__ == "__main__":
    unittest.main()

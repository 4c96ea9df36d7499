"""`make bench`: no benchmark is written yet; say so rather than print figures nobody measured."""

import sys

sys.exit("bench: no benchmarks yet (they come with the performance work); nothing was measured")

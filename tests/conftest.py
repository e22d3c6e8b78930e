"""Test-session settings.

Most of the suite's time is XLA compiling programs that then run for a step or two, so the tests
compile with XLA's backend optimisations off (measured: a v3 train-and-eval run 78 s -> 61 s);
the numbers are the same functions, and the parity tests' tolerances hold. The quickstart's
accuracy test runs the command line in a subprocess with the user's flags instead.
"""

import os

FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {FAST_COMPILE}'.strip()

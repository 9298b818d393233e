"""Run the whole suite on the CPU, whatever GPU the machine has.

The fast path is CPU-only by design (a GPU is slower for a 64-64 network), and many tests assert that it is
used; with a visible GPU, ``device="auto"`` would pick CUDA and (correctly) fall back. Hiding the GPU here,
before anything initialises CUDA, keeps the suite's meaning the same with ``CUDA_VISIBLE_DEVICES`` set or
unset; the fallback on a non-CPU device is tested explicitly in test_trust.py.
"""

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""

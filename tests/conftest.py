"""Run the whole suite on the CPU, with one torch thread, whatever the machine has.

The fast path is CPU-only by design (a GPU is slower for a 64-64 network), and many tests assert that it is
used; with a visible GPU, ``device="auto"`` would pick CUDA and (correctly) fall back. Hiding the GPU here,
before anything initialises CUDA, keeps the suite's meaning the same with ``CUDA_VISIBLE_DEVICES`` set or
unset; the fallback on a non-CPU device is tested explicitly in test_trust.py.

One OpenMP thread (inherited by every subprocess the tests start): on a busy 2-core machine torch's default
two threads spin-wait inside tiny matrix products, and a test of a few seconds took minutes.
"""

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("OMP_NUM_THREADS", "1")

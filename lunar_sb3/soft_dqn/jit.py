"""Whether Numba compiles the fast path's loops, and the one decorator that does it.

Numba is a dependency, but a broken install (a wheel built for another NumPy, a missing llvmlite) or
``LUNAR_SB3_NUMBA=0`` must not stop anyone from training: then the decorated functions stay plain Python
(``.py_func`` is the same function) and ``SoftUpdateDQN`` trains on SB3's general path.
"""

import os
from collections.abc import Callable
from typing import Any

try:
    from numba import njit

    HAS_NUMBA = True
    IMPORT_ERROR = ""
except (ImportError, OSError) as error:  # no numba, one built for another NumPy, a broken llvmlite
    HAS_NUMBA = False
    IMPORT_ERROR = f"{type(error).__name__}: {error}"

ENV_SWITCH = "LUNAR_SB3_NUMBA"


def switched_off() -> bool:
    """``LUNAR_SB3_NUMBA`` is 0/false/no/off (read at every call, so a test or a user can flip it)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")


def enabled() -> bool:
    """Numba is importable and not switched off."""
    return HAS_NUMBA and not switched_off()


def disabled_reason() -> str | None:
    """Why compiled loops are not used, or None."""
    if not HAS_NUMBA:
        return f"numba cannot be imported ({IMPORT_ERROR})"
    if switched_off():
        return f"{ENV_SWITCH}={os.environ.get(ENV_SWITCH)}"
    return None


def jit(function: Callable[..., Any]) -> Any:
    """Compile ``function`` lazily with Numba (cached on disk), or leave it plain Python without Numba.

    ``fastmath`` contract and reassoc let LLVM fuse multiply-adds and reorder sums (vectorised reductions):
    the results then match torch's to float32 rounding, never bit for bit, which is what the tests assert.
    No other fast-math flag: NaN and infinity keep their meaning. ``error_model="numpy"``: a float division by
    zero gives inf or NaN as in NumPy and torch instead of raising, which also lets loops that divide (Adam's)
    run vectorised. Numba's disk cache is keyed on the decorated function's source file, not on these options:
    after changing them, delete ``lunar_sb3/soft_dqn/__pycache__/*.nbi`` (or the ``NUMBA_CACHE_DIR``).
    """
    if not HAS_NUMBA:
        function.py_func = function
        return function
    return njit(cache=True, nogil=True, fastmath={"contract", "reassoc"}, error_model="numpy")(function)


_blas_limited = False


def single_threaded_blas() -> None:
    """Run SciPy's OpenBLAS (the BLAS Numba's ``np.dot`` calls) on one thread, unless OPENBLAS_NUM_THREADS is set.

    Why: for a 256-256 network OpenBLAS splits each product over all cores, and its threads spin-wait between
    the training step's small products while the env steps; on a busy 2-core machine that made a gradient step
    ~30x slower (measured). SoftUpdateDQN's torch runs on one thread for the same reason. Done through OpenBLAS's
    own ``openblas_set_num_threads`` (SciPy's wheels prefix it ``scipy_``); a BLAS without it is left alone.
    """
    global _blas_limited
    if _blas_limited or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    _blas_limited = True
    import ctypes
    import glob

    import scipy

    root = os.path.dirname(os.path.dirname(scipy.__file__))
    pattern = "*openblas*.[sd][oyl]*"  # .so, .dylib, .dll
    for path in glob.glob(os.path.join(root, "scipy.libs", pattern)) + glob.glob(
        os.path.join(root, "scipy", ".dylibs", pattern)
    ):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            setter = getattr(library, name, None)
            if setter is not None:
                setter(1)
                return

"""Keras and TensorFlow, imported once and quietly; seeds.

Every module that needs Keras imports it from here (``from .backend import keras``), so
the log settings below are made before TensorFlow starts. Modules that read or write
``.cae`` bytes never import this one (``tests/test_package.py`` checks).
"""
from __future__ import annotations

import contextlib
import os
import sys

# TensorFlow's C++ start-up chatter goes to stderr. It would land in the notebooks'
# stored outputs and make nbval fail, so it is silenced here, once, for every user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def stderr_silenced():
    """Send file descriptor 2 to /dev/null for the duration of the block.

    TensorFlow writes its start-up log lines from C++ before Python logging is set up,
    so only an OS-level redirect hides them.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some embedded consoles): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with stderr_silenced():
    import keras  # noqa: E402  (imported here on purpose, after the log settings)
    import tensorflow as tf  # noqa: E402  (the backend)

# Python-side TensorFlow warnings (e.g. "retracing") are for library developers; they would
# only clutter a student's notebook.
tf.get_logger().setLevel("ERROR")


def set_seed(seed: int = 42) -> None:
    """Seed Python, NumPy and TensorFlow so that a training cell repeats exactly.

    Call it at the top of every cell that initialises or trains a model.
    """
    keras.utils.set_random_seed(int(seed))


def quiet_tensorflow():
    """A ``with`` block that hides TensorFlow's C++ log lines (file descriptor 2) inside it.

    The first time a process trains the seed CAE, TensorFlow's graph optimizer prints a
    harmless ``remapper failed: INVALID_ARGUMENT ... LeakyRelu`` line: it cannot fuse
    the convolution with its leaky ReLU for the gradient, leaves that part of the graph as
    it is, and training runs normally. The line would land in the notebook as a red stderr
    output. Python warnings and exceptions are not affected (they do not use descriptor 2
    in Jupyter). Use it around training calls only::

        with cu.quiet_tensorflow():
            history = model.fit(...)
    """
    return stderr_silenced()


def device_name() -> str:
    """``"GPU (name)"`` when TensorFlow sees a GPU, else ``"CPU"``: where training runs."""
    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else "CPU"

"""The one place that chooses the Keras backend.

batchrank runs Keras on JAX. Every module that imports keras imports it through
:func:`keras_module`, so the backend is set before keras is first imported.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import ModuleType

_BACKEND = "jax"


def ensure_jax_backend() -> None:
    """Set ``KERAS_BACKEND=jax``; warn if the user asked for another backend."""
    current = os.environ.get("KERAS_BACKEND")
    if current and current != _BACKEND:
        warnings.warn(
            f"KERAS_BACKEND={current!r} is not supported by batchrank; using 'jax' instead",
            stacklevel=2,
        )
    os.environ["KERAS_BACKEND"] = _BACKEND
    # TensorFlow (only used by the tfds source) should not grab all CPU threads or log noise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != _BACKEND:
            from batchrank.errors import ConfigError

            raise ConfigError(
                f"keras was imported with backend {keras.backend.backend()!r} before batchrank; "
                "set KERAS_BACKEND=jax"
            )


def keras_module() -> ModuleType:
    """Return the keras module, imported with the JAX backend."""
    ensure_jax_backend()
    import keras

    _keep_tensorflow_out()
    return keras


def _keep_tensorflow_out() -> None:
    """Keras asks ``tf.available`` while serializing any object (``model.save`` in ``train``
    and ``import``), which imports all of TensorFlow when it is installed: seconds of start-up
    and absl log lines on stderr, for an isinstance check that cannot succeed on JAX. Unless
    TensorFlow is already imported (the tfds source), tell Keras's lazy module it is absent."""
    if "tensorflow" in sys.modules:
        return
    try:
        from keras.src.utils import module_utils
    except ImportError:  # a Keras without the private module: nothing to do
        return
    lazy = getattr(module_utils, "tensorflow", None)
    if lazy is not None and getattr(lazy, "_available", True) is None:
        lazy._available = False

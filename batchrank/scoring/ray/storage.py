"""The driver's object-store settings and keys, carried to Ray's workers in their arguments.

A cluster without a shared file system reads everything from the object store, and its nodes
need not have the driver's environment: ``AWS_ENDPOINT_URL``, the region, a job's
``[storage]`` section, and static keys (``AWS_ACCESS_KEY_ID`` ...) set where ``batchrank
score`` runs. They travel inside the Ray tasks' and actors' arguments (pickled into Ray's
object store), not in a ``runtime_env``: Ray's runtime-env agent writes every ``env_vars``
value, secrets included, to ``runtime_env_agent.log`` on each node.

- the scoring actors get a :class:`WorkerStorage` and apply it before fetching the bundle;
- Ray Data's read tasks (and its Parquet sampling tasks) get :func:`read_filesystem`, the
  driver's file system with the driver's static S3 keys built in.

Nodes whose credentials come from their own chain (instance or pod roles, profiles,
application-default credentials) still use it when the driver has no static keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchrank import fs

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["CARRIED", "WorkerStorage", "read_filesystem", "worker_storage"]

_KEYS = (
    ("access_key", "AWS_ACCESS_KEY_ID"),
    ("secret_key", "AWS_SECRET_ACCESS_KEY"),
    ("session_token", "AWS_SESSION_TOKEN"),
)
CARRIED = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    *(name for _, name in _KEYS),
)
"""The driver's variables a worker gets (when set): S3 endpoint, region and static keys."""


@dataclass(frozen=True)
class WorkerStorage:
    """What a worker process needs to open the driver's URIs as the driver does."""

    options: fs.StorageOptions
    """The driver's :func:`batchrank.fs.current_options` (a job's ``[storage]`` section)."""
    env: dict[str, str] = field(default_factory=dict, repr=False)
    """The driver's values of :data:`CARRIED` (secrets among them: never printed)."""

    def apply(self) -> None:
        """Use these settings in this process (its own variables of the same names lose)."""
        os.environ.update(self.env)
        fs.configure(self.options)
        fs.clear_cache()


def worker_storage() -> WorkerStorage:
    """The driver's settings, to hand to the scoring actors."""
    env = {name: value for name in CARRIED if (value := os.environ.get(name))}
    return WorkerStorage(options=fs.current_options(), env=env)


def read_filesystem(path: fs.ObjectPath) -> pafs.FileSystem:
    """The file system for Ray's readers of ``path``: an S3 one with the driver's static keys
    built in (pyarrow pickles them with it), else the driver's own (endpoint and region
    pickle with it; credentials come from each node's chain)."""
    keys = {arg: os.environ[name] for arg, name in _KEYS if os.environ.get(name)}
    if path.scheme != "s3" or not {"access_key", "secret_key"} <= keys.keys():
        return fs.filesystem_of(path)[0]
    return fs.s3_filesystem(fs.current_options(), **keys)

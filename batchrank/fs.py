"""Where a path lives: local disk, or an object store (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``).

:class:`ObjectPath` is a ``Path`` whose text is a URI. Reading works as on a local path
(``exists()``, ``is_dir()``, ``stat()``, ``open("rb")``, ``read_text()``) through pyarrow's own
file systems (:func:`filesystem_of`); anything that would touch the local disk under that name
(``os.stat``, ``mkdir``, ``open("w")``) raises ``TypeError`` instead of creating ``./s3:/...``.
Writing goes through :mod:`batchrank.storage.remote` (stage locally, upload, commit by copy).

Credentials come from each SDK's standard chain (AWS variables, profiles, instance roles;
Google application-default credentials; Azure environment). ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` are honoured as the AWS CLI honours them (pyarrow does not), and a job
file's ``[storage]`` section (:class:`StorageOptions`, :func:`configure`) sets region, endpoint
and anonymous access. Every URI printed goes through :func:`redact` (no passwords or access keys,
no query strings); a store's error becomes one line through
:func:`batchrank.store_errors.remote_reason`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import stat as stat_mod
import threading
from pathlib import Path, PosixPath
from typing import IO, TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = [
    "REMOTE_SCHEMES",
    "ObjectPath",
    "StorageOptions",
    "bucket_exists",
    "cache_root",
    "clear_cache",
    "configure",
    "current_options",
    "filesystem_of",
    "is_remote",
    "local_folder_for",
    "open_stream",
    "redact",
    "s3_filesystem",
]

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
"""URI schemes read and written through pyarrow's file systems."""


@dataclasses.dataclass(frozen=True)
class StorageOptions:
    """Object-store settings beyond each SDK's own chain (a job file's ``[storage]``)."""

    region: str | None = None
    """S3 region; default ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else the bucket's."""
    endpoint: str | None = None
    """S3 (or GCS) endpoint URL; default ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``."""
    anonymous: bool = False
    """Read public buckets without credentials."""
    lock_dir: str | None = None
    """Local folder of the locks guarding remote outputs (default: ~/.cache/batchrank/locks)."""


_options = StorageOptions()
_cache: dict[tuple[Any, ...], pafs.FileSystem] = {}
_cache_lock = threading.Lock()


def configure(options: StorageOptions) -> None:
    """Use ``options`` for every object-store path from now on (a job's ``[storage]``)."""
    global _options
    _options = options


def clear_cache() -> None:
    """Forget the cached file systems (after the environment's endpoint or keys changed)."""
    with _cache_lock:
        _cache.clear()


def current_options() -> StorageOptions:
    """The options set by :func:`configure` (the defaults when none were)."""
    return _options


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#@\s'\"]*)@")
_QUERY = re.compile(r"(://[^\s'\"?]*)\?[^\s'\"]*")
_SECRETS = re.compile(
    r"(?i)((?:secret|token|signature|credential|password|access_key|x-amz-[a-z-]+)[=:]\s*)"
    r"[^\s&'\",]+"
)


def _userinfo(m: re.Match[str]) -> str:
    scheme, userinfo = m[1], m[2]
    user, colon, _ = userinfo.partition(":")
    if colon and scheme.lower() not in REMOTE_SCHEMES:
        return f"{scheme}://{user}:***@"
    return f"{scheme}://***@"


def redact(text: str) -> str:
    """``text`` with the secrets of every URI in it (and of ``secret=...`` pairs) hidden.

    One rule for every scheme; a password is never shown:

    - ``user:password@`` becomes ``user:***@`` and ``:password@`` ``:***@``, as redis-cli and
      libpq print them (``redis://alice:***@host``): the user names the account, not a secret.
    - In an object-store URI (``s3://``, ``gs://``, ... :data:`REMOTE_SCHEMES`) the userinfo is
      an access key pair (``AKIA...:secret@``), hidden whole: ``s3://***@``.
    - Userinfo with no colon (``name@``) may be a token (``https://TOKEN@host``): ``***@``.
    - A query string (presigned signatures, SAS tokens) becomes ``?***``.

    Text already redacted stays as it is (``redact(redact(t)) == redact(t)``).
    """
    text = _USERINFO.sub(_userinfo, text)
    text = _QUERY.sub(r"\1?***", text)
    return _SECRETS.sub(r"\1***", text)


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem(options: StorageOptions, **keys: str) -> pafs.FileSystem:
    """S3 with ``options``, the endpoint and region variables, and explicit ``keys``
    (``access_key``, ``secret_key``, ``session_token``; none: the SDK's provider chain)."""
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"anonymous": options.anonymous, **keys}
    endpoint = options.endpoint or _env_endpoint()
    if endpoint:
        scheme, sep, rest = endpoint.partition("://")
        kwargs["endpoint_override"] = rest.rstrip("/") if sep else scheme.rstrip("/")
        kwargs["scheme"] = scheme if sep else "https"
    region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    elif endpoint:
        kwargs["region"] = "us-east-1"  # S3-compatible servers ignore it; skip the lookup
    return pafs.S3FileSystem(**kwargs)


def _make(scheme: str, authority: str, options: StorageOptions) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    if scheme == "s3":
        return s3_filesystem(options)
    if scheme == "gs":
        kwargs: dict[str, Any] = {"anonymous": options.anonymous}
        if options.endpoint:
            kwargs["endpoint_override"] = options.endpoint.partition("://")[2] or options.endpoint
            kwargs["scheme"] = options.endpoint.partition("://")[0] or "https"
        return pafs.GcsFileSystem(**kwargs)
    if scheme == "hdfs":
        host, _, port = authority.partition(":")
        return pafs.HadoopFileSystem(host or "default", int(port) if port else 0)
    fs, _ = pafs.FileSystem.from_uri(f"abfs://{authority}/")
    return fs


def _canonical(scheme: str) -> str:
    return {"gcs": "gs", "viewfs": "hdfs", "abfss": "abfs"}.get(scheme, scheme)


def filesystem_of(path: ObjectPath) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system of ``path`` and the path within it, cached per
    (scheme, bucket or host, options).

    Raises:
        OSError: the file system cannot be created (HDFS without libhdfs, a bad account).
    """
    scheme = _canonical(path.scheme)
    authority = path.authority
    endpoint = _env_endpoint() if scheme == "s3" else None
    key_authority = "" if scheme in ("s3", "gs") else authority
    key = (scheme, key_authority, _options, endpoint, os.environ.get("AWS_REGION"))
    with _cache_lock:
        fs = _cache.get(key)
        if fs is None:
            fs = _cache[key] = _make(scheme, authority, _options)
    return fs, path.fs_path


class ObjectPath(PosixPath):
    """A path in an object store: ``ObjectPath("s3://bucket/key")``; ``str()`` gives the URI."""

    @property
    def scheme(self) -> str:
        """``s3``, ``gs``, ``hdfs``, ``abfs``..."""
        return self.parts[0].rstrip(":").lower()

    @property
    def authority(self) -> str:
        """The bucket, container@account or host:port."""
        return self.parts[1] if len(self.parts) > 1 else ""

    @property
    def key(self) -> str:
        """The object key (the path within the bucket), without a leading slash."""
        return "/".join(self.parts[2:])

    @property
    def fs_path(self) -> str:
        """The path as the pyarrow file system names it (``bucket/key``; ``/key`` on HDFS)."""
        scheme = _canonical(self.scheme)
        if scheme == "hdfs":
            return "/" + self.key
        root = self.authority.split("@")[0] if scheme == "abfs" else self.authority
        return f"{root}/{self.key}".rstrip("/")

    def __str__(self) -> str:
        text = super().__str__()
        first = self.parts[0] if self.parts else ""
        if not first.endswith(":"):
            return text  # a relative part (relative_to), no scheme
        return f"{first}//{text[len(first) + 1 :]}"

    def __fspath__(self) -> str:
        raise TypeError(f"{redact(str(self))}: an object-store URI has no local path")

    def __repr__(self) -> str:
        return f"ObjectPath({redact(str(self))!r})"

    def display(self) -> str:
        """The URI as printed in messages and manifests (secrets redacted)."""
        return redact(str(self))

    def child(self, fs_path: str) -> ObjectPath:
        """The ObjectPath of a path its file system listed (``bucket/key/x.parquet``)."""
        mine = self.fs_path
        rel = fs_path[len(mine) :].lstrip("/") if fs_path.startswith(mine) else fs_path
        return self / rel if rel else self

    # --- reading (pathlib's own exists(), is_dir(), is_file(), read_* build on these) --------

    def info(self) -> Any:
        """pyarrow's ``FileInfo`` of the object (type, size, mtime)."""
        fs, p = filesystem_of(self)
        return fs.get_file_info(p)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:  # type: ignore[override]
        import pyarrow.fs as pafs

        info = self.info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(2, "no such object", str(self))
        mode = stat_mod.S_IFDIR | 0o755 if info.type == pafs.FileType.Directory else 0o100644
        ns = info.mtime_ns or 0
        size = info.size or 0
        secs = ns / 1e9
        fields = (mode, 0, 0, 1, 0, 0, size, int(secs), int(secs), int(secs))
        return os.stat_result((*fields, secs, secs, secs, ns, ns, ns))

    def lstat(self) -> os.stat_result:
        return self.stat()

    def exists(self, *, follow_symlinks: bool = True) -> bool:  # type: ignore[override]
        try:
            self.stat()
        except FileNotFoundError:
            return False
        return True

    def is_symlink(self) -> bool:
        return False

    def resolve(self, strict: bool = False) -> ObjectPath:
        return self

    def absolute(self) -> ObjectPath:
        return self

    def expanduser(self) -> ObjectPath:
        return self

    def open(  # type: ignore[override]
        self,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> IO[Any]:
        """Open for reading (``"r"`` or ``"rb"``); writing goes through a Storage."""
        if mode not in ("r", "rb", "rt"):
            raise TypeError(f"{self.display()}: objects are written through batchrank.storage")
        fs, p = filesystem_of(self)
        raw = fs.open_input_file(p)
        if mode == "rb":
            return raw  # type: ignore[return-value]
        return io.TextIOWrapper(
            io.BufferedReader(raw),  # type: ignore[arg-type]
            encoding=encoding or "utf-8",
            errors=errors,
            newline=newline,
        )

    def iter_files(self) -> list[tuple[ObjectPath, Any]]:
        """Every object under this prefix (recursively), with its ``FileInfo``, sorted."""
        import pyarrow.fs as pafs

        fs, p = filesystem_of(self)
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=True, allow_not_found=True))
        files = [(self.child(i.path), i) for i in infos if i.type == pafs.FileType.File]
        return sorted(files, key=lambda t: str(t[0]))

    def iterdir(self) -> Any:
        import pyarrow.fs as pafs

        fs, p = filesystem_of(self)
        for info in fs.get_file_info(pafs.FileSelector(p, allow_not_found=True)):
            yield self.child(info.path)


def cache_root() -> Path:
    """Local folder of fetched bundles: ``BATCHRANK_CACHE_DIR``, else ~/.cache/batchrank."""
    env = os.environ.get("BATCHRANK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "batchrank"


def local_folder_for(folder: Path, kind: str) -> Path:
    """A local folder standing in for a remote ``folder`` (``folder`` itself when local).

    ``kind`` is ``locks`` (what guards a remote output: :attr:`StorageOptions.lock_dir`, else
    ``BATCHRANK_LOCK_DIR``, else ``<cache>/locks``), ``scratch`` (top-k spill files) or
    ``catalogs`` (the default Iceberg catalog of a remote table). Resume state is not among
    them: it stays on the store beside a remote output (docs/cloud.md).
    """
    if not isinstance(folder, ObjectPath):
        return folder
    if kind == "locks":
        env = _options.lock_dir or os.environ.get("BATCHRANK_LOCK_DIR")
        root = Path(env).expanduser() if env else cache_root() / "locks"
    else:
        root = cache_root() / kind
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{folder.scheme}-{folder.authority}")[:60]
    return root / f"{safe}-{digest}"


def bucket_exists(path: ObjectPath) -> bool:
    """Whether the bucket (container, HDFS root) of ``path`` exists."""
    import pyarrow.fs as pafs

    root = ObjectPath(f"{path.parts[0]}/{path.authority}")
    return bool(root.info().type != pafs.FileType.NotFound)


def open_stream(path: ObjectPath) -> Any:
    """A sequential input stream of an object (CSV is read through it block by block)."""
    fs, p = filesystem_of(path)
    return fs.open_input_stream(p)


def is_remote(path: object) -> TypeGuard[ObjectPath]:
    """Whether ``path`` is an :class:`ObjectPath`."""
    return isinstance(path, ObjectPath)


def local_or_remote(path: Path) -> Path:
    """``path`` itself; a ``Path`` made from a URI (``s3:/b/k``) back as its ObjectPath."""
    if isinstance(path, ObjectPath):
        return path
    first = path.parts[0] if path.parts else ""
    if first.endswith(":") and first[:-1].lower() in REMOTE_SCHEMES:
        return ObjectPath(str(path).replace(":/", "://", 1))
    return path

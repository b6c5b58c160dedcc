"""Where tfspark reads and writes: local paths for TensorFlow, and object stores (S3...) through pyarrow.fs.

TensorFlow writes only local (and GCS/HDFS) paths, so checkpoints, the saved model and the training summary
for a directory on an object store are written locally and uploaded (`RemoteDirectory`). See docs/tfspark.md.
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse, urlsplit

if TYPE_CHECKING:
    from pyarrow import fs as pafs

INDEX_FILE = "checkpoint"
HADOOP_SCHEMES = {"s3a": "s3", "s3n": "s3"}


def url_to_path(url: str) -> str:
    """A `file://` URL or bare path → an absolute local path; other URLs (`s3://`...) are returned unchanged."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return os.path.abspath(parsed.path)
    if parsed.scheme == "" or len(parsed.scheme) == 1:
        return os.path.abspath(url)
    return url


@functools.lru_cache(maxsize=16)
def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    from pyarrow import fs as pafs

    return pafs.FileSystem.from_uri(root)


def resolve_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """A file URI as Spark lists it → (pyarrow filesystem, path in it); one filesystem per scheme and host.

    Hadoop's `s3a://` names the same objects as `s3://`, which pyarrow reads (credentials and endpoint from
    the standard AWS variables, as the lake's)."""
    from pyarrow import fs as pafs

    parts = urlsplit(uri)
    if not parts.scheme:
        return pafs.LocalFileSystem(), uri
    scheme = HADOOP_SCHEMES.get(parts.scheme, parts.scheme)
    filesystem, root = _filesystem(f"{scheme}://{parts.netloc}/")
    return filesystem, f"{root.rstrip('/')}/{unquote(parts.path).lstrip('/')}"


class RemoteDirectory:
    """A directory on a filesystem TensorFlow cannot write (e.g. S3), read and written through pyarrow.fs."""

    def __init__(self, url: str, filesystem: Any, path: str) -> None:
        self.url = url.rstrip("/")
        self.filesystem = filesystem
        self.path = path.rstrip("/")

    @classmethod
    def for_url(cls, url: str) -> RemoteDirectory | None:
        """The remote directory at `url`, or None when TensorFlow can use the path directly (local disk)."""
        from pyarrow import fs as pafs

        if url_to_path(url) != url:
            return None
        filesystem, path = resolve_uri(url)
        return None if isinstance(filesystem, pafs.LocalFileSystem) else cls(url, filesystem, path)

    def names(self) -> set[str]:
        """The names of the files directly in the directory (none if it does not exist)."""
        from pyarrow import fs as pafs

        infos = self.filesystem.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return {info.path.rsplit("/", 1)[-1] for info in infos if info.is_file}

    def download_to(self, local_dir: str) -> None:
        """Copy the files of the checkpoints the index names (and the index) into `local_dir`."""
        remote = self.names()
        if INDEX_FILE not in remote:
            return
        with self.filesystem.open_input_stream(f"{self.path}/{INDEX_FILE}") as stream:
            index = stream.read().decode()
        kept = {os.path.basename(line.split('"')[1]) for line in index.splitlines()
                if line.startswith("all_model_checkpoint_paths")}
        for name in remote:
            if name.split(".")[0] in kept:
                self._copy(f"{self.path}/{name}", os.path.join(local_dir, name), download=True)
        with open(os.path.join(local_dir, INDEX_FILE), "w") as handle:
            handle.write(index)

    def upload_from(self, local_dir: str, saved: str) -> None:
        """Upload the files of the checkpoint `saved` (e.g. `ckpt-40`), then the index (the commit), then delete
        the files of checkpoints no longer kept locally."""
        local = set(os.listdir(local_dir))
        for name in sorted(local):
            if name.startswith(f"{saved}."):
                self._copy(os.path.join(local_dir, name), f"{self.path}/{name}", download=False)
        self._copy(os.path.join(local_dir, INDEX_FILE), f"{self.path}/{INDEX_FILE}", download=False)
        for name in self.names() - local:
            self.filesystem.delete_file(f"{self.path}/{name}")

    @classmethod
    def for_url_or_local(cls, url: str) -> RemoteDirectory:
        """The directory at `url` through pyarrow.fs, local or remote (for the few small files every
        directory type handles the same way: the training summary)."""
        from pyarrow import fs as pafs

        return cls.for_url(url) or cls(url, pafs.LocalFileSystem(), url_to_path(url))

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write the file `name` atomically (local: aside, then rename; object store: one PUT); return its path."""
        target = f"{self.path}/{name}"
        self.filesystem.create_dir(self.path, recursive=True)
        partial = f"{self.path}/.{name}.partial" if self.filesystem.type_name == "local" else target
        with self.filesystem.open_output_stream(partial) as stream:
            stream.write(data)
        if partial != target:
            self.filesystem.move(partial, target)
        return target if self.filesystem.type_name == "local" else f"{self.url}/{name}"

    def put(self, local_file: str, name: str) -> str:
        """Upload one local file as `name` (one PUT: readers see the old object or the new one); return its URL."""
        self._copy(local_file, f"{self.path}/{name}", download=False)
        return f"{self.url}/{name}"

    def get(self, name: str, local_file: str) -> None:
        """Download the file `name` to `local_file` (what a library that reads only local files is given)."""
        self._copy(f"{self.path}/{name}", local_file, download=True)

    def read_bytes(self, name: str) -> bytes | None:
        """The content of the file `name`, or None if it does not exist."""
        try:
            with self.filesystem.open_input_stream(f"{self.path}/{name}") as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        """Delete the file `name` if it exists."""
        try:
            self.filesystem.delete_file(f"{self.path}/{name}")
        except FileNotFoundError:
            pass

    def _copy(self, source: str, target: str, *, download: bool) -> None:
        if download:
            with self.filesystem.open_input_stream(source) as stream, open(target, "wb") as handle:
                shutil.copyfileobj(stream, handle)
        else:
            with open(source, "rb") as handle, self.filesystem.open_output_stream(target) as stream:
                shutil.copyfileobj(handle, stream)

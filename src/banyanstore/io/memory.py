"""``MemoryEnv``: an in-memory filesystem that can simulate a crash (power loss).

Durability model (what :meth:`MemoryEnv.crash` keeps):

* **file contents**: each inode keeps the bytes it had at its last ``sync()``;
  a crash rolls the contents back to that (empty if never synced).  Writes,
  truncations and ``open_writable`` truncation since then are lost;
* **names**: each directory keeps its namespace (name -> inode) as of its last
  ``sync_dir()``; a crash rolls every directory back to it.  So an unsynced
  create, rename, remove or link is undone, and a file that was synced but
  whose directory never was disappears;
* **directories themselves** are durable as soon as ``mkdir`` returns, and
  ``rmdir`` is durable at once (simplification; the engine syncs parents anyway);
  renaming a directory follows the rule for names.

After ``crash()`` the env works again, as after a reboot: every handle opened
before is dead (any use raises :class:`~banyanstore.errors.StorageIOError`) and
every lock is released.  Paths are ``str`` with ``/`` separators, relative ones
taken from ``/``.  One lock makes the whole env thread-safe.
"""

from __future__ import annotations

import copy
import errno
import posixpath

from ..errors import StoreLockedError
from .base import Env, FileLock, MappedFile, RandomAccessFile, WritableFile
from .memory_nodes import Dir, Inode, MemLock, MemMapped, MemReadable, MemWritable, Shared
from .memory_nodes import raise_oserror as _raise

__all__ = ["MemoryEnv"]


class MemoryEnv(Env):
    """In-memory filesystem with :meth:`crash` (see the module docstring)."""

    mode = "memory"

    def __init__(self, *, capacity: int = 1 << 40, root: Dir | None = None) -> None:
        """``capacity`` only sets what :meth:`free_space` reports (writes never fail;
        use :class:`~banyanstore.io.faults.FaultEnv` for ENOSPC); ``root``: the tree of
        directories and files to start from (:meth:`clone`), else an empty one."""
        self.capacity = capacity
        self._shared = Shared()  # the lock, crash generation and locks of every handle
        self._mu = self._shared.mu
        self._root = Dir() if root is None else root
        self.crashes = 0

    # -- crash simulation ------------------------------------------------------------
    def crash(self) -> None:
        """Lose everything not synced; kill every handle and lock; keep working."""
        with self._mu:
            self._shared.generation += 1
            self._shared.locked.clear()
            self.crashes += 1
            self._restore(self._root)

    drop_unsynced = crash

    def _restore(self, d: Dir) -> None:
        d.live = dict(d.durable)
        for node in d.live.values():
            if isinstance(node, Dir):
                self._restore(node)
            else:
                node.data = bytearray(node.durable)

    def clone(self) -> MemoryEnv:
        """An independent copy of the current state (live and durable); no handles, no locks."""
        with self._mu:
            # the memo of one deepcopy keeps hard links shared
            return MemoryEnv(capacity=self.capacity, root=copy.deepcopy(self._root))

    def snapshot_state(self, *, durable: bool = False) -> dict[str, bytes]:
        """``{path: contents}`` of every file, as now or as a crash would leave it."""
        out: dict[str, bytes] = {}

        def walk(d: Dir, prefix: str) -> None:
            for name, node in (d.durable if durable else d.live).items():
                if isinstance(node, Dir):
                    walk(node, f"{prefix}{name}/")
                else:
                    out[prefix + name] = node.durable if durable else bytes(node.data)
        with self._mu:
            walk(self._root, "/")
        return out

    # -- path resolution (REQUIRES: self._mu held) -----------------------------------
    @staticmethod
    def _parts(path: str) -> list[str]:
        norm = posixpath.normpath("/" + path).lstrip("/")
        return norm.split("/") if norm else []

    def _dir(self, parts: list[str], op: str, path: str, plain: bool = False) -> Dir:
        d = self._root
        for name in parts:
            node = d.live.get(name)
            if node is None:
                _raise(op, path, errno.ENOENT, plain)
            if not isinstance(node, Dir):
                _raise(op, path, errno.ENOTDIR)
            d = node
        return d

    def _parent(self, path: str, op: str, plain: bool = False) -> tuple[Dir, str]:
        parts = self._parts(path)
        if not parts:
            _raise(op, path, errno.EBUSY)
        return self._dir(parts[:-1], op, path, plain), parts[-1]

    def _node(self, path: str, op: str, plain: bool = False) -> Inode | Dir:
        parts = self._parts(path)
        if not parts:
            return self._root
        node = self._dir(parts[:-1], op, path, plain).live.get(parts[-1])
        if node is None:
            _raise(op, path, errno.ENOENT, plain)
        return node

    def _file(self, path: str, op: str, plain: bool = False) -> Inode:
        node = self._node(path, op, plain)
        if isinstance(node, Dir):
            _raise(op, path, errno.EISDIR)
        return node

    # -- files -------------------------------------------------------------------------
    def open_writable(self, path: str, *, append: bool = False) -> WritableFile:
        with self._mu:
            d, name = self._parent(path, "open for writing")
            node = d.live.get(name)
            if isinstance(node, Dir):
                _raise("open for writing", path, errno.EISDIR)
            if node is None:
                node = d.live[name] = Inode()
            elif not append:
                node.resize(0)
            return MemWritable(self._shared, path, node)

    def open_mapped(self, path: str, *, create: bool = False) -> MappedFile:
        with self._mu:
            if create:
                f = self.open_writable(path)
                f.close()
            return MemMapped(self._shared, path, self._file(path, "open for mapping"))

    def open_readable(self, path: str) -> RandomAccessFile:
        with self._mu:
            return MemReadable(self._shared, path, self._file(path, "open for reading", plain=True))

    # -- names -------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        with self._mu:
            try:
                self._node(path, "stat")
            except OSError:
                return False
            return True

    def file_size(self, path: str) -> int:
        with self._mu:
            node = self._node(path, "stat", plain=True)
            return 0 if isinstance(node, Dir) else len(node.data)

    def listdir(self, path: str) -> list[str]:
        with self._mu:
            return sorted(self._dir(self._parts(path), "listdir", path, plain=True).live)

    def mkdir(self, path: str) -> None:
        with self._mu:
            d = self._root
            for name in self._parts(path):
                node = d.live.get(name)
                if node is None:  # directories are durable once created (module docstring)
                    node = d.live[name] = d.durable[name] = Dir()
                elif not isinstance(node, Dir):
                    _raise("mkdir", path, errno.EEXIST)
                d = node

    def remove(self, path: str) -> None:
        with self._mu:
            d, name = self._parent(path, "remove", plain=True)
            node = d.live.get(name)
            if node is None:
                _raise("remove", path, errno.ENOENT, plain=True)
            if isinstance(node, Dir):
                _raise("remove", path, errno.EISDIR)
            del d.live[name]

    def rmdir(self, path: str) -> None:
        with self._mu:
            d, name = self._parent(path, "rmdir")
            node = d.live.get(name)
            if node is None:
                _raise("rmdir", path, errno.ENOENT)
            if not isinstance(node, Dir):
                _raise("rmdir", path, errno.ENOTDIR)
            if node.live:
                _raise("rmdir", path, errno.ENOTEMPTY)
            del d.live[name]
            d.durable.pop(name, None)

    def rename(self, src: str, dst: str) -> None:
        op = f"rename to {dst}"
        with self._mu:
            sd, sname = self._parent(src, op)
            node = sd.live.get(sname)
            if node is None:
                _raise(op, src, errno.ENOENT)
            dd, dname = self._parent(dst, op)
            target = dd.live.get(dname)
            if target is node:
                return
            if isinstance(node, Dir):
                if target is not None and not isinstance(target, Dir):
                    _raise(op, src, errno.ENOTDIR)
                if isinstance(target, Dir) and target.live:
                    _raise(op, src, errno.ENOTEMPTY)
                if self._parts(dst)[:len(self._parts(src))] == self._parts(src):
                    _raise(op, src, errno.EINVAL)  # into its own subtree
            elif isinstance(target, Dir):
                _raise(op, src, errno.EISDIR)
            del sd.live[sname]
            dd.live[dname] = node

    def link(self, src: str, dst: str) -> None:
        op = f"link to {dst}"
        with self._mu:
            node = self._node(src, op)
            if isinstance(node, Dir):
                _raise(op, src, errno.EPERM)
            dd, dname = self._parent(dst, op)
            if dname in dd.live:
                _raise(op, src, errno.EEXIST)
            dd.live[dname] = node

    def sync_dir(self, path: str) -> None:
        with self._mu:
            node = self._node(path, "fsync directory")
            if not isinstance(node, Dir):
                _raise("fsync directory", path, errno.ENOTDIR)
            node.durable = dict(node.live)

    def lock(self, path: str) -> FileLock:
        with self._mu:
            d, name = self._parent(path, "open lock file")
            node = d.live.get(name)
            if node is None:
                node = d.live[name] = Inode()
            elif isinstance(node, Dir):
                _raise("open lock file", path, errno.EISDIR)
            if node in self._shared.locked:
                raise StoreLockedError(f"{path} is locked by another writer (open handle); "
                                       "open with read_only=True to read concurrently")
            self._shared.locked.add(node)
            return MemLock(self._shared, node)

    def free_space(self, path: str) -> int:
        with self._mu:
            self._node(path, "statvfs")
            seen: dict[int, int] = {}

            def walk(d: Dir) -> None:
                for node in d.live.values():
                    if isinstance(node, Dir):
                        walk(node)
                    else:
                        seen[id(node)] = len(node.data)
            walk(self._root)
            return max(0, self.capacity - sum(seen.values()))

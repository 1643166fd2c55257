"""A littlefs block device in a host file, the unix board's "flash" (loaded only when mounted).

Only block I/O here; the filesystem is MicroPython's VfsLfs2."""

import os


class FileBlockDevice:
    """A littlefs block device in a host file (extended block protocol: offsets, erase)."""

    def __init__(self, path, block_size=4096, block_count=256):
        self.block_size = block_size
        self.block_count = block_count
        try:
            size = os.stat(path)[6]
        except OSError:
            size = -1
        if size != block_size * block_count:
            with open(path, "wb") as f:
                blank = b"\xff" * block_size
                for _ in range(block_count):
                    f.write(blank)
        self._f = open(path, "r+b", buffering=0)

    def readblocks(self, block, buf, offset=0):
        self._f.seek(block * self.block_size + offset)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        self._f.seek(block * self.block_size + (offset or 0))
        # Unbuffered: the write reaches the host file at once (a process kill keeps it);
        # no fsync, which would cost ~50 ms per block for nothing a test needs.
        self._f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.block_count
        if op == 5:
            return self.block_size
        if op == 6:  # erase: littlefs rewrites it anyway; nothing to do on a file
            return 0
        return None

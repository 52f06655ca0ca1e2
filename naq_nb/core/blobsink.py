"""Where a download from the object store writes its chunks: one buffer of the object's size.

Collected in a list and joined, a download held two full copies for a moment (a 150 MB ``nq.put``
value was 300 MB in the worker). The size is known before the first chunk (a reference carries
it), so the chunks go into one buffer made up front, and the buffer is what the reader gets.

No NATS here: :mod:`.blobs` does the I/O and checks what this counted.
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["ChunkSink"]


class ChunkSink(io.BufferedIOBase):
    """Takes an object's chunks into ``data`` (``size`` bytes) and notes when the last came.

    A BufferedIOBase, as ``ObjectStore.get(writeinto=)`` takes one; only ``write`` is used (by
    :func:`~naq_nb.core.download.read_chunks`, on the loop). Bytes past ``size`` (an object replaced
    or forged since its reference was made) are counted in ``got`` but never written, and nothing is
    raised here: the read goes on to the last chunk, and the reader compares ``got`` with the size
    once the download is over. (Its buffer is not called ``buffer``: nats-py writes into
    ``writeinto.buffer`` when there is one, as for a text file.)"""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.data = bytearray(size)
        self._view = memoryview(self.data)
        self.got = 0  # bytes the object has sent so far, written or not
        self.last = time.monotonic()

    def write(self, chunk: ReadableBuffer) -> int:
        n = memoryview(chunk).nbytes
        end = self.got + n
        if end <= len(self.data):
            self._view[self.got : end] = chunk
        self.got = end
        self.last = time.monotonic()
        return n

    def take(self) -> bytearray:
        """The buffer, the sink done with it (the view that wrote into it let go)."""
        self._view.release()
        return self.data

"""Read a worker's messages from its pipe, many per system call, never blocking.

A worker writes each message with ``Connection.send_bytes``: a 4-byte
big-endian length (or -1 and an 8-byte length, for a message over 2 GiB),
then the bytes. ``Connection.recv_bytes`` reads a message with two reads,
and asking whether another one waits (``Connection.poll``) builds a selector
each time: on a line of tiny jobs that was a tenth of the control loop's
time. :class:`FrameReader` reads whatever the pipe holds in one ``read`` and
cuts the messages out of it; a message that has not fully arrived waits in
the buffer for the next read.
"""

from __future__ import annotations

import os
import struct

__all__ = ["FrameReader"]

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")
#: Bytes asked for per read: a pipe holds 64 KiB unless it was made larger.
_READ_SIZE = 1 << 16


class FrameReader:
    """The messages of one pipe. Its descriptor is made non-blocking: the
    control loop reads when its selector says the pipe is readable, and a
    worker stopped halfway through a message must not stop the loop."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        #: The pipe has ended: the worker closed it (died) and all was read.
        self.ended = False
        self._buffer = bytearray()
        self._start = 0  # where the first message not taken yet begins

    def fill(self) -> bool:
        """Read what the pipe holds now; whether anything came."""
        if self.ended:
            return False
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:  # closed under us: as good as ended
            data = b""
        if not data:
            self.ended = True
            return False
        if self._start:  # drop what was taken before growing the buffer
            del self._buffer[:self._start]
            self._start = 0
        self._buffer += data
        return True

    def next_message(self) -> bytes | None:
        """The next whole message read, or None until more is read."""
        buffer, start = self._buffer, self._start
        if len(buffer) - start < 4:
            return None
        (size,) = _SHORT.unpack_from(buffer, start)
        body = start + 4
        if size == -1:
            if len(buffer) - start < 12:
                return None
            (size,) = _LONG.unpack_from(buffer, body)
            body += 8
        end = body + size
        if len(buffer) < end:
            return None
        with memoryview(buffer) as view:  # one copy, not two
            message = bytes(view[body:end])
        if end == len(buffer):  # all taken: the buffer starts afresh
            buffer.clear()
            self._start = 0
        else:
            self._start = end
        return message

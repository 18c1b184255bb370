"""The control loop reads a worker's messages many per read: every message
arrives whole and in order, however the pipe cut it, and nothing is read
twice or lost when the worker dies halfway through one."""

from __future__ import annotations

import os
import struct
import threading
from multiprocessing.connection import Connection

from corral.runtime.frames import FrameReader


def _pipe() -> tuple[FrameReader, int]:
    read, write = os.pipe()
    return FrameReader(read), write


def _drain(reader: FrameReader) -> list[bytes]:
    got = []
    while (message := reader.next_message()) is not None:
        got.append(message)
    return got


def test_many_messages_of_one_read_come_out_in_order():
    reader, write = _pipe()
    sender = Connection(write, readable=False)
    for number in range(200):
        sender.send_bytes(b"job %d" % number)
    assert reader.fill()
    assert _drain(reader) == [b"job %d" % number for number in range(200)]
    assert not reader.fill()  # nothing more yet: the read did not block
    assert not reader.ended
    sender.close()
    assert not reader.fill() and reader.ended


def test_a_message_larger_than_the_pipe_arrives_whole_across_reads():
    reader, write = _pipe()
    big = os.urandom(3 << 20)
    connection = Connection(write, readable=False)

    def send() -> None:
        connection.send_bytes(big)
        connection.close()

    sender = threading.Thread(target=send)
    sender.start()
    got: list[bytes] = []
    while not reader.ended:
        if not reader.fill():
            os.sched_yield()
        got += _drain(reader)
    sender.join()
    assert [len(message) for message in got] == [len(big)] and got[0] == big


def test_the_long_header_of_a_huge_message_is_understood():
    # Connection.send_bytes writes -1 and an 8-byte length for messages over 2 GiB.
    reader, write = _pipe()
    os.write(write, struct.pack("!i", -1) + struct.pack("!Q", 5) + b"hello"
             + struct.pack("!i", 3) + b"end")
    reader.fill()
    assert _drain(reader) == [b"hello", b"end"]


def test_a_worker_that_dies_mid_message_leaves_only_its_whole_messages():
    reader, write = _pipe()
    os.write(write, struct.pack("!i", 2) + b"ok" + struct.pack("!i", 100) + b"cut short")
    os.close(write)
    reader.fill()
    assert _drain(reader) == [b"ok"]
    assert not reader.fill() and reader.ended
    assert reader.next_message() is None


def test_a_header_split_between_two_reads_is_joined():
    reader, write = _pipe()
    frame = struct.pack("!i", 4) + b"data"
    os.write(write, frame[:2])
    reader.fill()
    assert reader.next_message() is None
    os.write(write, frame[2:])
    reader.fill()
    assert _drain(reader) == [b"data"]

"""What ssh2-python does not give of a libssh2 channel, read with libssh2's own C functions and fields.

``executor.libssh2`` uses it for a job's exit signal and to see its exit status before the channel
closes; where the checks here fail, that transport is off and ``ssh.transport = auto`` uses paramiko.
"""

from __future__ import annotations

from typing import Any

from ssh2.channel import Channel


class CChannel:
    """What ssh2-python does not give of a channel, read with libssh2's own C functions.

    - The exit signal: ssh2-python's ``Channel.get_exit_signal`` never returns the name (it passes NULL
      for the lengths and then reads them), so a command killed by a signal would read as exit status
      0.  ``exit_signal`` calls ``libssh2_channel_get_exit_signal`` of the libssh2 the extension loaded,
      on the pointer the extension type holds: its only C fields are ``LIBSSH2_CHANNEL *_channel`` then
      ``Session _session`` (checked: the type's size and no Cython vtable), so the pointer sits right
      after the object header.
    - Whether the exit status has arrived: libssh2 keeps it in ``channel->exit_status``, 0 until then,
      with no flag.  ``watch_status`` stores a value no exit status has in that field of a fresh
      channel, where the layout is libssh2 1.11's (checked on each channel: the field before it points
      at the channel type ``session``), so an exit status is seen before the EOF, as over paramiko: a
      background child holding the job's stdout does not keep the job running.
    """

    UNSET = -(2**31)  # what no exit status reads as (a status is 0..255)

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        self.head = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)  # PyObject_HEAD
        if Channel.__basicsize__ != self.head + 2 * ctypes.sizeof(ctypes.c_void_p) or "__pyx_vtable__" in Channel.__dict__:
            raise OSError("unexpected ssh2-python Channel layout")
        lib = None
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if line.count("/") else ""
                if "/libssh2" in path and ".so" in path:
                    lib = ctypes.CDLL(path)
                    break
        if lib is None:
            raise OSError("libssh2 is not loaded")
        void = ctypes.c_void_p
        self.get_signal = lib.libssh2_channel_get_exit_signal
        self.get_signal.argtypes = [void, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t), void, void, void, void]
        self.get_signal.restype = ctypes.c_int
        lib.libssh2_version.restype = ctypes.c_char_p
        lib.libssh2_version.argtypes = [ctypes.c_int]
        version = (lib.libssh2_version(0) or b"").decode()
        word = ctypes.sizeof(ctypes.c_void_p)
        self.status_offset = 5 * word if version.startswith("1.11.") else None  # int exit_status
        self.signal_offset = 6 * word if version.startswith("1.11.") else None  # char *exit_signal, right after it
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = [void]

    def pointer(self, chan: Any) -> int | None:
        return self.ctypes.c_void_p.from_address(id(chan) + self.head).value

    def exit_signal(self, chan: Any, watched: bool = False) -> str | None:
        """The signal that ended the command, or None; ``watched``: ``watch_status`` accepted this channel."""
        pointer = self.pointer(chan)
        if not pointer:
            return None
        ctypes = self.ctypes
        if watched and self.signal_offset is not None and not ctypes.c_void_p.from_address(pointer + self.signal_offset).value:
            return None  # no exit-signal request has arrived
        name = ctypes.c_char_p()
        size = ctypes.c_size_t()
        if self.get_signal(pointer, ctypes.byref(name), ctypes.byref(size), None, None, None, None) != 0 or not name.value:
            return None
        value = name.value[: size.value].decode(errors="replace")
        self.libc.free(ctypes.cast(name, ctypes.c_void_p))  # copied with the session's allocator: ssh2-python keeps the default
        return value

    def watch_status(self, chan: Any) -> bool:
        """Mark a fresh channel's exit status as not arrived; False where the layout is not the one known."""
        pointer = self.pointer(chan)
        if not pointer or self.status_offset is None:
            return False
        ctypes = self.ctypes
        word = ctypes.sizeof(ctypes.c_void_p)
        kind = ctypes.c_void_p.from_address(pointer + 3 * word).value
        if ctypes.c_size_t.from_address(pointer + 4 * word).value != 7 or not kind or ctypes.string_at(kind, 7) != b"session":
            return False
        ctypes.c_int.from_address(pointer + self.status_offset).value = self.UNSET
        return True

    def status(self, chan: Any) -> int:
        """The exit status field of a channel ``watch_status`` marked (ssh2-python would take UNSET for an error)."""
        pointer = self.pointer(chan)
        assert pointer and self.status_offset is not None
        return self.ctypes.c_int.from_address(pointer + self.status_offset).value

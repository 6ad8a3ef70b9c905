"""Start and stop the three kinds of board the HIL runner drives.

* :class:`HostBoard`: the firmware built for the host, a POSIX process on a
  TCP port (or a pty);
* :class:`QemuBoard`: bare-metal Cortex-M firmware in ``qemu-system-arm``
  (one of :data:`QEMU_BOARDS`: ``mps2-an386``, ``stm32f405``) with its
  UART on a TCP port and ``-icount shift=0`` (instructions can be counted
  exactly);
* :class:`OnnxBoard`: ``python -m firmware_bridge.serve MODEL.onnx``, the edge
  server a Raspberry Pi class board would run.

Each is a context manager with ``url`` (for :class:`~firmware_bridge.link.BoardLink`)
and ``kill()`` (to test what the host does when a board dies).
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .link import BoardLinkError

__all__ = ["Board", "HostBoard", "QemuBoard", "OnnxBoard", "QemuMachine", "QEMU_BOARDS", "free_tcp_port"]


@dataclass(frozen=True)
class QemuMachine:
    """An emulated board: the firmware target it runs (:data:`firmware_bridge.build.TARGETS`) and QEMU's machine."""

    target: str
    machine: str
    cpu: str
    description: str
    has_fpu: bool = True


#: ``--board`` names of the emulated boards (``qemu`` is the original name of ``mps2-an386``).
QEMU_BOARDS = {
    "mps2-an386": QemuMachine("mps2-an386", "mps2-an386", "cortex-m4", "ARM MPS2 AN386, Cortex-M4F, CMSDK UART"),
    "stm32f405": QemuMachine("stm32f405", "netduinoplus2", "cortex-m4",
                             "STM32F405 (Cortex-M4F) on QEMU's netduinoplus2, USART1"),
    "microbit": QemuMachine("microbit", "microbit", "cortex-m0", "nRF51822 (Cortex-M0, no FPU), BBC micro:bit, UART0",
                            has_fpu=False),
}
QEMU_BOARDS["qemu"] = QEMU_BOARDS["mps2-an386"]


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Board:
    """A board process. Subclasses set ``self.proc`` and ``self.url`` in ``start()``."""

    proc: subprocess.Popen | None = None
    url: str = ""

    def start(self) -> Board:
        raise NotImplementedError

    def __enter__(self) -> Board:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Stop the board abruptly (as a crash or a pulled cable would)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (getattr(self.proc, "stdout", None), getattr(self.proc, "stderr", None)):
            if stream is not None:
                stream.close()

    def _stderr_tail(self) -> str:
        if self.proc is None or self.proc.stderr is None or self.proc.poll() is None:
            return ""
        try:
            return self.proc.stderr.read().decode(errors="replace")[-2000:]
        except Exception:  # diagnostics only
            return ""

    def _read_announcement(self, timeout: float) -> str:
        """Wait for the ``SINDYRL_BOARD ...`` line a board prints when it listens."""
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    break
                buf += chunk
                if b"\n" in buf:
                    line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
                    if line.startswith("SINDYRL_BOARD "):
                        return line
                    raise BoardLinkError(f"board printed {line!r} instead of its address")
        finally:
            sel.close()
        self.kill()
        raise BoardLinkError(f"board {self.describe()} did not start within {timeout:g} s. {self._stderr_tail()}")

    def describe(self) -> str:
        return type(self).__name__


class HostBoard(Board):
    """The host build of the firmware as a process.

    Parameters
    ----------
    executable : path
        ``FirmwareBuild.path`` of a ``host`` build.
    transport : {"tcp", "pty"}
        ``tcp``: 127.0.0.1 on a port the board picks; ``pty``: a pseudo-terminal.
    """

    def __init__(self, executable, transport: str = "tcp", start_timeout: float = 10.0):
        if transport not in ("tcp", "pty"):
            raise ValueError(f"HostBoard: transport must be 'tcp' or 'pty', got {transport!r}")
        self.executable = Path(executable)
        if not self.executable.is_file():
            raise FileNotFoundError(f"HostBoard: firmware executable not found: {self.executable}")
        self.transport = transport
        self.start_timeout = start_timeout

    def describe(self) -> str:
        return f"host firmware {self.executable}"

    def start(self) -> HostBoard:
        args = [str(self.executable), "--tcp", "0"] if self.transport == "tcp" else [str(self.executable), "--pty"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        kind, where = self._read_announcement(self.start_timeout).split()[1:3]
        self.url = f"socket://127.0.0.1:{where}" if kind == "tcp" else where
        return self


class QemuBoard(Board):
    """Bare-metal firmware under ``qemu-system-arm`` (by default ``-M mps2-an386``).

    Parameters
    ----------
    elf : path
        ``FirmwareBuild.path`` of a build for the board's target.
    icount : bool, default True
        Run with ``-icount shift=0`` (one instruction per virtual ns) so
        BENCH counts instructions exactly and repeatably.
    board : str, default "mps2-an386"
        A key of :data:`QEMU_BOARDS`.
    """

    def __init__(self, elf, icount: bool = True, board: str = "mps2-an386"):
        self.elf = Path(elf)
        if board not in QEMU_BOARDS:
            raise ValueError(f"QemuBoard: unknown board {board!r}; expected one of {sorted(QEMU_BOARDS)}")
        if not self.elf.is_file():
            raise FileNotFoundError(f"QemuBoard: firmware image not found: {self.elf}")
        if shutil.which("qemu-system-arm") is None:
            raise BoardLinkError("QemuBoard: qemu-system-arm is not installed (Debian package qemu-system-arm)")
        self.icount = icount
        self.machine = QEMU_BOARDS[board]

    def describe(self) -> str:
        return f"QEMU {self.machine.machine} running {self.elf}"

    def start(self) -> QemuBoard:
        port = free_tcp_port()
        m = self.machine
        cmd = [
            "qemu-system-arm", "-M", m.machine, "-cpu", m.cpu, "-nographic", "-monitor", "none",
            "-serial", f"tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on", "-kernel", str(self.elf),
        ]
        if self.icount:
            # sleep=off: the idle (polling) guest does not wait for real time, which
            # keeps the round trip near a millisecond
            cmd += ["-icount", "shift=0,sleep=off"]
        # nodelay=on: without it Nagle's algorithm on QEMU's side meets the host's
        # delayed ACK and every reply takes ~40 ms
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"socket://127.0.0.1:{port}"
        # wait until QEMU listens, so a failure to start is reported here, clearly
        deadline = time.monotonic() + 10.0
        while True:
            if self.proc.poll() is not None:
                raise BoardLinkError(f"QEMU exited with code {self.proc.returncode}: {self._stderr_tail()}")
            if _port_open(port):
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise BoardLinkError(f"QEMU did not open its serial port {port} within 10 s")
            time.sleep(0.05)


def _port_open(port: int) -> bool:
    # QEMU's chardev accepts one client; probing with a connection would use it
    # up, so look at the kernel's listening sockets instead.
    try:
        text = Path("/proc/net/tcp").read_text()
    except OSError:
        return True  # cannot tell: let BoardLink's connect retries handle it
    want = f":{port:04X}"
    return any(
        parts[1].endswith(want) and parts[3] == "0A" for parts in (ln.split() for ln in text.splitlines()[1:])
    )


class OnnxBoard(Board):
    """The ONNX edge server (``firmware_bridge.serve``) as a process on a TCP port or a pty."""

    def __init__(self, model_path, transport: str = "tcp", start_timeout: float = 60.0, python: str | None = None):
        if transport not in ("tcp", "pty"):
            raise ValueError(f"OnnxBoard: transport must be 'tcp' or 'pty', got {transport!r}")
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"OnnxBoard: ONNX model not found: {self.model_path}")
        self.transport = transport
        self.start_timeout = start_timeout
        self.python = python or sys.executable

    def describe(self) -> str:
        return f"ONNX edge server for {self.model_path}"

    def start(self) -> OnnxBoard:
        port = "tcp://127.0.0.1:0" if self.transport == "tcp" else "pty"
        cmd = [self.python, "-m", "firmware_bridge.serve", str(self.model_path), "--port", port]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        kind, where = self._read_announcement(self.start_timeout).split()[1:3]
        self.url = f"socket://127.0.0.1:{where}" if kind == "tcp" else where
        return self

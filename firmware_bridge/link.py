"""The host's end of the serial link to a board: requests, replies, recovery.

``BoardLink(url)`` opens anything pyserial's ``serial_for_url`` understands
(``/dev/ttyUSB0``, a pty path, ``socket://127.0.0.1:PORT``...). Each request
carries a sequence number; replies with another number are stale and skipped.
Garbage on the line costs one bad frame (the decoder resynchronises at the
next 0x00), and bytes left over from an earlier exchange are discarded before
each request. A request unanswered within ``timeout`` seconds is sent again,
at most ``retries`` times; then :class:`BoardTimeout` says so. A frame-level
ERROR from the board (it saw a corrupted frame, whose sequence number it could
not trust) is counted but not acted on: it may answer garbage sent earlier, so
only the timeout triggers a resend. A link that goes away
raises :class:`BoardLinkError` at once. So a dead board is reported in at most
``timeout * (retries + 1)`` seconds, never a hang.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .protocol import (
    SEQ_UNKNOWN,
    BanditState,
    BenchMode,
    BenchResult,
    BenchUnit,
    ErrorCode,
    ErrorReply,
    Frame,
    FrameDecoder,
    FrameError,
    Info,
    MsgType,
    encode_frame,
    pack_bandit_reset,
    pack_bench,
    pack_episode_end,
    pack_floats,
    unpack_bandit_state,
    unpack_bench_result,
    unpack_error,
    unpack_floats,
    unpack_info,
)

__all__ = ["BoardLink", "BoardLinkError", "BoardTimeout", "BoardErrorReply", "LinkStats"]

_REPLY = {
    MsgType.HELLO: MsgType.INFO,
    MsgType.OBS: MsgType.ACT,
    MsgType.PING: MsgType.PONG,
    MsgType.BENCH: MsgType.BENCH_RESULT,
    MsgType.EPISODE_END: MsgType.BANDIT_STATE,
    MsgType.BANDIT_QUERY: MsgType.BANDIT_STATE,
    MsgType.BANDIT_RESET: MsgType.BANDIT_STATE,
}


class BoardLinkError(RuntimeError):
    """The link to the board failed (cannot open, closed, or the board stopped answering)."""


class BoardTimeout(BoardLinkError):
    """No valid reply within the timeout, after every retry."""


class BoardErrorReply(BoardLinkError):
    """The board answered a well-formed request with ERROR (e.g. non-finite observation).

    ``reply.safe_action`` is the action the board wants applied instead.
    """

    def __init__(self, message: str, reply: ErrorReply):
        super().__init__(message)
        self.reply = reply


@dataclass
class LinkStats:
    """Counts of everything that went wrong on the link, and round-trip times."""

    requests: int = 0
    retries: int = 0
    bad_frames: int = 0  # undecodable frames received (CRC, COBS, length...)
    stale_replies: int = 0  # valid frames with the wrong sequence number or type
    error_replies: int = 0  # ERROR messages from the board
    domain_errors: int = 0  # ERROR OUT_OF_DOMAIN (the board's domain guard): a report, not a link fault
    rtts: list[float] = field(default_factory=list)  # seconds, successful OBS round trips

    @property
    def protocol_errors(self) -> int:
        return self.retries + self.bad_frames + self.stale_replies + self.error_replies


class BoardLink:
    """A connection to a board speaking the sindyrl protocol.

    Parameters
    ----------
    url : str
        Port or URL for ``serial.serial_for_url``.
    timeout : float, default 1.0
        Seconds to wait for each reply.
    retries : int, default 2
        Extra attempts per request after a timeout or a corrupted-frame ERROR.
    connect_timeout : float, default 10.0
        Seconds to keep trying to open the port (a board process or QEMU may
        still be starting).
    baudrate : int, default 115200
        For real serial ports; ignored by sockets and ptys.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 1.0,
        retries: int = 2,
        connect_timeout: float = 10.0,
        baudrate: int = 115200,
    ):
        import serial

        if timeout <= 0 or retries < 0:
            raise ValueError(f"BoardLink: need timeout > 0 and retries >= 0, got {timeout} and {retries}")
        self.url = url
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.stats = LinkStats()
        self.info: Info | None = None
        self._decoder = FrameDecoder()
        self._seq = 0
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self._port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05, write_timeout=timeout)
                break
            except (serial.SerialException, OSError, ValueError) as e:
                if time.monotonic() > deadline:
                    raise BoardLinkError(f"cannot open board link {url!r} within {connect_timeout:g} s: {e}") from None
                time.sleep(0.05)

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        port = getattr(self, "_port", None)
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a dead link must not mask the error that killed it
                pass
            self._port = None

    def __enter__(self) -> BoardLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- requests
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_UNKNOWN  # 0..254; 255 means "unknown" in replies
        return self._seq

    def _write(self, data: bytes) -> None:
        import serial

        if self._port is None:
            raise BoardLinkError(f"board link {self.url!r} is closed")
        try:
            self._port.write(data)
            self._port.flush()
        except (serial.SerialException, OSError) as e:
            raise BoardLinkError(f"link to board at {self.url!r} lost while writing: {e}") from None

    def _read(self) -> bytes:
        import serial

        try:
            waiting = self._port.in_waiting
            return self._port.read(max(1, waiting))
        except (serial.SerialException, OSError) as e:
            raise BoardLinkError(f"link to board at {self.url!r} lost while reading: {e}") from None

    def _drain(self) -> None:
        """Drop unread input (late replies, echoes of garbage) so it cannot be taken for this reply."""
        import serial

        try:
            while self._port.in_waiting:
                for item in self._decoder.feed(self._port.read(self._port.in_waiting)):
                    self.stats.bad_frames += isinstance(item, FrameError)
                    self.stats.stale_replies += not isinstance(item, FrameError)
        except (serial.SerialException, OSError) as e:
            raise BoardLinkError(f"link to board at {self.url!r} lost while reading: {e}") from None

    def request(self, msg_type: MsgType, payload: bytes = b"") -> Frame:
        """Send one request and return its reply frame (ACT, INFO, ...).

        Raises
        ------
        BoardErrorReply
            The board answered with ERROR for this request.
        BoardTimeout
            No valid reply after ``retries + 1`` attempts.
        BoardLinkError
            The link broke.
        """
        want = _REPLY[MsgType(msg_type)]
        seq = self._next_seq()
        # a leading delimiter ends any partial frame left on the board's side
        wire = b"\x00" + encode_frame(msg_type, seq, payload)
        self.stats.requests += 1
        self._drain()
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            self._write(wire)
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                for item in self._decoder.feed(self._read()):
                    if isinstance(item, FrameError):
                        self.stats.bad_frames += 1
                        continue
                    if item.type == MsgType.ERROR and item.seq in (seq, SEQ_UNKNOWN):
                        try:
                            err = unpack_error(item.payload)
                        except FrameError:
                            self.stats.bad_frames += 1
                            continue
                        if err.code == ErrorCode.OUT_OF_DOMAIN:
                            self.stats.domain_errors += 1
                        else:
                            self.stats.error_replies += 1
                        if item.seq == SEQ_UNKNOWN or err.request_type == 0:
                            continue  # about some corrupted frame; ours is resent on timeout
                        raise BoardErrorReply(
                            f"board at {self.url!r} rejected {MsgType(msg_type).name}: {err.describe()}", err
                        )
                    if item.seq != seq or item.type != want:
                        self.stats.stale_replies += 1
                        continue
                    return item
        raise BoardTimeout(
            f"no valid reply from board at {self.url!r} to {MsgType(msg_type).name} after "
            f"{self.retries + 1} attempts of {self.timeout:g} s (board stopped, or link broken)"
        )

    def hello(self) -> Info:
        """Ask the board what it runs; also remembered as ``self.info``."""
        self.info = unpack_info(self.request(MsgType.HELLO).payload)
        return self.info

    def handshake(self, boot_timeout: float = 10.0) -> Info:
        """Wait until the board answers HELLO, then return its :class:`Info`, with clean link statistics.

        A board that has just started may not listen yet: an emulated STM32 drops bytes until its firmware
        enables the USART, and many real boards reset when the port opens and sit in a boot loader for a
        second or two. HELLO is sent again with growing waits (0.1 s, doubling up to ``timeout``) until a
        valid INFO arrives, for at most ``boot_timeout`` seconds. What went wrong before the board listened
        (lost requests, the garbage of half-received ones) is a start-up matter, not a link fault: the
        statistics start afresh once the board has answered.
        """
        deadline = time.monotonic() + boot_timeout
        wait = min(0.1, self.timeout)
        while True:
            seq = self._next_seq()
            self._drain()
            self._write(b"\x00" + encode_frame(MsgType.HELLO, seq, b""))
            until = min(time.monotonic() + wait, deadline)
            while time.monotonic() < until:
                for item in self._decoder.feed(self._read()):
                    if not isinstance(item, FrameError) and item.type == MsgType.INFO and item.seq == seq:
                        try:
                            self.info = unpack_info(item.payload)
                        except FrameError:
                            continue
                        self.stats = LinkStats()
                        return self.info
            if time.monotonic() >= deadline:
                raise BoardTimeout(f"board at {self.url!r} did not answer HELLO within {boot_timeout:g} s "
                                   "(not started, wrong port or baud rate, or another protocol)")
            wait = min(2 * wait, self.timeout)

    def act(self, obs) -> np.ndarray:
        """Send one observation, return the board's action (float32, shape (n_out,))."""
        if self.info is None:
            self.hello()
        x = np.asarray(obs, dtype=np.float32).reshape(-1)
        if x.size != self.info.n_in:
            raise ValueError(f"BoardLink.act: observation has {x.size} values, board model takes {self.info.n_in}")
        t0 = time.perf_counter()
        reply = self.request(MsgType.OBS, pack_floats(x))
        rtt = time.perf_counter() - t0
        a = unpack_floats(reply.payload, self.info.n_out)
        self.stats.rtts.append(rtt)
        return a

    def ping(self, payload: bytes = b"") -> float:
        """Round-trip time in seconds of a PING carrying ``payload`` (echo checked)."""
        t0 = time.perf_counter()
        reply = self.request(MsgType.PING, payload)
        rtt = time.perf_counter() - t0
        if reply.payload != payload:
            raise BoardLinkError(f"board at {self.url!r} echoed a different PING payload")
        return rtt

    def bench(self, n_calls: int, obs=None, mode: BenchMode = BenchMode.MODEL) -> BenchResult:
        """Have the board time ``n_calls`` model calls (or calibration iterations) itself."""
        if self.info is None:
            self.hello()
        x = np.zeros(self.info.n_in, np.float32) if obs is None else np.asarray(obs, np.float32).reshape(-1)
        payload = pack_bench(n_calls, mode, x if mode == BenchMode.MODEL else ())
        return unpack_bench_result(self.request(MsgType.BENCH, payload).payload)

    def instructions_per_call(self, n_calls: int = 1000, obs=None, n_calibrate: int = 1_000_000) -> float:
        """Instructions per model call on a Cortex-M board under QEMU ``-icount``.

        SysTick counts core clock ticks; under ``-icount shift=0`` a tick is a
        fixed number of instructions (40 on mps2-an386's 25 MHz clock),
        measured here with the board's calibration loop (exactly 2
        instructions per iteration). The result includes the loop and the
        call through the model pointer; it resolves one tick per
        ``n_calls`` calls.
        """
        cal = self.bench(n_calibrate, mode=BenchMode.CALIBRATE)
        if cal.unit != BenchUnit.CORE_TICKS or cal.elapsed == 0:
            raise BoardLinkError(f"board at {self.url!r} does not count core clock ticks (unit {cal.unit.name})")
        per_tick = 2.0 * n_calibrate / cal.elapsed
        res = self.bench(n_calls, obs)
        return res.elapsed * per_tick / n_calls

    # ------------------------------------------------ policy-set boards (EXP3-IX on the board)
    def bandit_state(self) -> BanditState:
        """The arm a policy-set board acts with now, and the probabilities it was drawn from."""
        return unpack_bandit_state(self.request(MsgType.BANDIT_QUERY).payload)

    def bandit_reset(self, seed: int, config: tuple[float, float, float, float] | None = None) -> BanditState:
        """Restart the board's bandit from ``seed`` (with ``(eta, gamma, return_low, return_high)`` if given,
        else the values built into the firmware); returns the first arm drawn."""
        return unpack_bandit_state(self.request(MsgType.BANDIT_RESET, pack_bandit_reset(seed, config)).payload)

    def episode_end(self, episode_return: float) -> BanditState:
        """Report the return of the episode just played; the board updates EXP3-IX and returns the next arm.

        A resend after a lost reply is safe: the board recognises it (same sequence number and payload as
        the EPISODE_END it just applied) and answers without counting the episode twice.
        """
        if not np.isfinite(episode_return):
            raise ValueError(f"BoardLink.episode_end: return must be finite, got {episode_return}")
        return unpack_bandit_state(self.request(MsgType.EPISODE_END, pack_episode_end(episode_return)).payload)

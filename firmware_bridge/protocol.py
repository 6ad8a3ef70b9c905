"""The host side of the sindyrl board protocol: frames, messages, a stream decoder.

A frame on the wire is ``COBS([version, type, seq, length, payload..., crc_hi, crc_lo]) 0x00``.
The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no
reflection, no final XOR; check value 0x29B1 for ``b"123456789"``), computed over
``version, type, seq, length, payload`` and appended most significant byte
first, so the CRC over a whole valid frame is 0. The explicit payload length
makes every truncated or extended frame fail deterministically: with the CRC
alone a truncation passes with probability 2**-16, and a frame whose CRC ends
in 0x00 still passes after losing that byte (the CRC register is zero there). Payload numbers are little-endian; floats are
IEEE-754 float32. The full specification is ``docs/protocol.md``; the board's
own implementation is ``firmware_bridge/board/sindyrl_protocol.c``.

This module depends only on numpy, the ``cobs`` package and the standard
library, so the ONNX edge server (``firmware_bridge.serve``) can use it on a
small Linux board.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass

import numpy as np
from cobs import cobs

__all__ = [
    "PROTOCOL_VERSION", "MAX_PAYLOAD", "OVERHEAD", "MAX_FRAME", "MAX_ENCODED", "SEQ_UNKNOWN",
    "MsgType", "ErrorCode", "ModelKind", "BenchMode", "BenchUnit",
    "Frame", "FrameError", "Info", "BenchResult", "ErrorReply",
    "crc16", "encode_frame", "decode_frame", "FrameDecoder",
    "pack_floats", "unpack_floats", "pack_info", "unpack_info", "pack_bench", "unpack_bench",
    "pack_bench_result", "unpack_bench_result", "pack_error", "unpack_error",
    "MAX_ARMS", "BanditState", "pack_episode_end", "pack_bandit_reset", "pack_bandit_state", "unpack_bandit_state",
]

PROTOCOL_VERSION = 1
#: Largest payload in bytes (63 float32 values); it must fit the one-byte length field.
MAX_PAYLOAD = 252
#: Bytes around the payload: version, type, seq, length, and the CRC (2).
OVERHEAD = 6
#: Largest decoded frame.
MAX_FRAME = OVERHEAD + MAX_PAYLOAD
#: Largest COBS-encoded frame without its delimiter (one overhead byte per 254).
MAX_ENCODED = MAX_FRAME + (MAX_FRAME + 253) // 254
#: Sequence number the board uses when it could not read the request's.
SEQ_UNKNOWN = 0xFF
#: Longest model name carried in INFO.
MAX_NAME = 32
#: Most policies in one policy-set firmware (``SINDYRL_BANDIT_MAX_ARMS`` in board/sindyrl_bandit.h).
MAX_ARMS = 32


class MsgType(enum.IntEnum):
    """Message types. Requests have the high bit clear, replies set."""

    HELLO = 0x01
    OBS = 0x02
    PING = 0x03
    BENCH = 0x04
    EPISODE_END = 0x05  #: policy-set boards: an episode's return; the bandit draws the next arm
    BANDIT_QUERY = 0x06  #: policy-set boards: the current arm and probabilities
    BANDIT_RESET = 0x07  #: policy-set boards: restart the bandit from a seed (and optionally a configuration)
    INFO = 0x81
    ACT = 0x82
    PONG = 0x83
    BENCH_RESULT = 0x84
    BANDIT_STATE = 0x85  #: reply to EPISODE_END, BANDIT_QUERY and BANDIT_RESET
    ERROR = 0x7F


class ErrorCode(enum.IntEnum):
    """Codes carried by an ERROR reply (same values as ``sindyrl_err_t`` in C)."""

    BAD_CRC = 1
    BAD_LENGTH = 2
    UNKNOWN_TYPE = 3
    NONFINITE = 4
    BAD_VERSION = 5
    BAD_COBS = 6
    OVERSIZE = 7
    EVAL_FAILED = 8
    TOO_SHORT = 9
    BAD_VALUE = 10
    OUT_OF_DOMAIN = 11  #: an input outside the policy's input bounds by more than the margin (domain guard)


class ModelKind(enum.IntEnum):
    SPARSE = 1
    NEURAL = 2
    ONNX = 3


class BenchMode(enum.IntEnum):
    MODEL = 0  #: call the model n times on the given input
    CALIBRATE = 1  #: run a loop of exactly 2 instructions per iteration n times


class BenchUnit(enum.IntEnum):
    NANOSECONDS = 1  #: wall-clock nanoseconds (host and ONNX boards)
    CORE_TICKS = 2  #: SysTick decrements at the core clock (Cortex-M board)


class FrameError(ValueError):
    """A received frame is malformed; ``code`` is the matching :class:`ErrorCode`."""

    def __init__(self, code: ErrorCode, message: str, seq: int = SEQ_UNKNOWN):
        super().__init__(message)
        self.code = code
        self.seq = seq


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = PROTOCOL_VERSION


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data``."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(msg_type: int, seq: int, payload: bytes = b"", version: int = PROTOCOL_VERSION) -> bytes:
    """One frame, COBS-encoded and terminated by 0x00, ready to write."""
    if not 0 <= seq <= 0xFF or not 0 <= int(msg_type) <= 0xFF:
        raise ValueError(f"encode_frame: type {msg_type!r} and seq {seq!r} must be bytes (0..255)")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"encode_frame: payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    raw = bytes((version, int(msg_type), seq, len(payload))) + bytes(payload)
    raw += crc16(raw).to_bytes(2, "big")
    return cobs.encode(raw) + b"\x00"


def decode_frame(encoded: bytes) -> Frame:
    """Decode one COBS-encoded frame (without its 0x00 delimiter).

    Raises
    ------
    FrameError
        Oversize, bad COBS, too short, length field not matching, bad CRC, or
        unknown protocol version.
    """
    if len(encoded) > MAX_ENCODED:
        raise FrameError(ErrorCode.OVERSIZE, f"frame of {len(encoded)} encoded bytes exceeds {MAX_ENCODED}")
    try:
        raw = cobs.decode(bytes(encoded))
    except cobs.DecodeError as e:
        raise FrameError(ErrorCode.BAD_COBS, f"bad COBS encoding ({e})") from None
    if len(raw) < OVERHEAD:
        raise FrameError(ErrorCode.TOO_SHORT, f"frame of {len(raw)} bytes is shorter than the {OVERHEAD}-byte minimum")
    if len(raw) > MAX_FRAME:
        raise FrameError(ErrorCode.OVERSIZE, f"decoded frame of {len(raw)} bytes exceeds {MAX_FRAME}")
    if raw[3] != len(raw) - OVERHEAD:
        raise FrameError(ErrorCode.BAD_LENGTH, f"length field says {raw[3]} payload bytes, frame has "
                                               f"{len(raw) - OVERHEAD} (truncated or extended frame)")
    if crc16(raw) != 0:
        raise FrameError(ErrorCode.BAD_CRC, "CRC mismatch")
    if raw[0] != PROTOCOL_VERSION:
        raise FrameError(ErrorCode.BAD_VERSION, f"protocol version {raw[0]}, expected {PROTOCOL_VERSION}", raw[2])
    return Frame(type=raw[1], seq=raw[2], payload=raw[4:-2], version=raw[0])


class FrameDecoder:
    """Split a byte stream at 0x00 delimiters and decode each frame.

    Garbage between frames costs at most one bad frame: decoding resumes at
    the next delimiter. Runs longer than :data:`MAX_ENCODED` are discarded up
    to the next delimiter (reported once as OVERSIZE) so memory stays bounded.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False

    def reset(self) -> None:
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Push bytes; return the frames (or FrameErrors) completed by them, in order."""
        out: list[Frame | FrameError] = []
        for chunk_end, part in _split_keep(data):
            if not self._overflow:
                self._buf += part
                if len(self._buf) > MAX_ENCODED:
                    self._overflow = True
                    self._buf.clear()
            if chunk_end:
                if self._overflow:
                    out.append(FrameError(ErrorCode.OVERSIZE, f"frame longer than {MAX_ENCODED} encoded bytes"))
                elif self._buf:  # empty frames are bare delimiters, used to resynchronise
                    try:
                        out.append(decode_frame(bytes(self._buf)))
                    except FrameError as e:
                        out.append(e)
                self._buf.clear()
                self._overflow = False
        return out


def _split_keep(data: bytes):
    """Yield (ends_with_delimiter, bytes before it) pieces of ``data``."""
    start = 0
    while True:
        i = data.find(b"\x00", start)
        if i < 0:
            if start < len(data):
                yield False, data[start:]
            return
        yield True, data[start:i]
        start = i + 1


# ------------------------------------------------------------------ payloads
def pack_floats(values) -> bytes:
    """Little-endian float32 payload of a 1-D array."""
    a = np.asarray(values, dtype="<f4").reshape(-1)
    if 4 * a.size > MAX_PAYLOAD:
        raise ValueError(f"pack_floats: {a.size} floats exceed MAX_PAYLOAD={MAX_PAYLOAD} bytes")
    return a.tobytes()


def unpack_floats(payload: bytes, n: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack_floats`; checks the count when ``n`` is given."""
    if len(payload) % 4 or (n is not None and len(payload) != 4 * n):
        want = "a multiple of 4" if n is None else str(4 * n)
        raise FrameError(ErrorCode.BAD_LENGTH, f"float payload of {len(payload)} bytes, expected {want}")
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)


@dataclass(frozen=True)
class Info:
    """What a board says about itself in reply to HELLO."""

    kind: ModelKind
    n_in: int
    n_out: int
    max_payload: int
    model_hash: str
    name: str


_INFO = struct.Struct("<BHHH16sB")


def pack_info(info: Info) -> bytes:
    name = info.name.encode()[:MAX_NAME]
    h = info.model_hash.encode("ascii")[:16].ljust(16, b"\x00")
    return _INFO.pack(int(info.kind), info.n_in, info.n_out, info.max_payload, h, len(name)) + name


def unpack_info(payload: bytes) -> Info:
    if len(payload) < _INFO.size:
        raise FrameError(ErrorCode.BAD_LENGTH, f"INFO payload of {len(payload)} bytes is too short")
    kind, n_in, n_out, max_payload, h, name_len = _INFO.unpack_from(payload)
    if len(payload) != _INFO.size + name_len:
        raise FrameError(ErrorCode.BAD_LENGTH, f"INFO payload of {len(payload)} bytes, name length {name_len}")
    try:
        kind = ModelKind(kind)
    except ValueError:
        raise FrameError(ErrorCode.BAD_LENGTH, f"INFO: unknown model kind {kind}") from None
    name = payload[_INFO.size:].decode("utf-8", errors="replace")
    return Info(kind, n_in, n_out, max_payload, h.rstrip(b"\x00").decode("ascii", errors="replace"), name)


_BENCH = struct.Struct("<IB")


def pack_bench(n_calls: int, mode: BenchMode, obs=()) -> bytes:
    if not 1 <= n_calls <= 0xFFFFFFFF:
        raise ValueError(f"pack_bench: n_calls must be in 1..2**32-1, got {n_calls}")
    return _BENCH.pack(n_calls, int(mode)) + pack_floats(obs)


def unpack_bench(payload: bytes) -> tuple[int, BenchMode, np.ndarray]:
    if len(payload) < _BENCH.size:
        raise FrameError(ErrorCode.BAD_LENGTH, f"BENCH payload of {len(payload)} bytes is too short")
    n, mode = _BENCH.unpack_from(payload)
    if mode not in (0, 1):
        raise FrameError(ErrorCode.BAD_LENGTH, f"BENCH: unknown mode {mode}")
    return n, BenchMode(mode), unpack_floats(payload[_BENCH.size:])


@dataclass(frozen=True)
class BenchResult:
    n_calls: int
    mode: BenchMode
    unit: BenchUnit
    elapsed: int


_BENCH_RESULT = struct.Struct("<IBBQ")


def pack_bench_result(r: BenchResult) -> bytes:
    return _BENCH_RESULT.pack(r.n_calls, int(r.mode), int(r.unit), r.elapsed)


def unpack_bench_result(payload: bytes) -> BenchResult:
    if len(payload) != _BENCH_RESULT.size:
        raise FrameError(ErrorCode.BAD_LENGTH, f"BENCH_RESULT payload of {len(payload)} bytes, expected 14")
    n, mode, unit, elapsed = _BENCH_RESULT.unpack(payload)
    try:
        return BenchResult(n, BenchMode(mode), BenchUnit(unit), elapsed)
    except ValueError as e:
        raise FrameError(ErrorCode.BAD_LENGTH, f"BENCH_RESULT: {e}") from None


@dataclass(frozen=True)
class ErrorReply:
    """An ERROR message: what went wrong, for which request, and the safe action."""

    code: int
    request_type: int
    safe_action: np.ndarray

    def describe(self) -> str:
        try:
            name = ErrorCode(self.code).name
        except ValueError:
            name = f"code {self.code}"
        try:
            req = MsgType(self.request_type).name
        except ValueError:
            req = f"type 0x{self.request_type:02x}"
        return f"{name} (request {req})"


def pack_error(code: int, request_type: int, safe_action=()) -> bytes:
    return bytes((int(code), int(request_type))) + pack_floats(safe_action)


def unpack_error(payload: bytes) -> ErrorReply:
    if len(payload) < 2 or (len(payload) - 2) % 4:
        raise FrameError(ErrorCode.BAD_LENGTH, f"ERROR payload of {len(payload)} bytes is malformed")
    return ErrorReply(payload[0], payload[1], unpack_floats(payload[2:]))


# ------------------------------------------------------------ policy-set bandit
@dataclass(frozen=True)
class BanditState:
    """A policy-set board's selection: the arm it acts with and the distribution it was drawn from."""

    arm: int
    n_arms: int
    episodes: int  #: episodes reported since the last reset
    probabilities: np.ndarray


_BANDIT_STATE = struct.Struct("<BBI")


def pack_episode_end(episode_return: float) -> bytes:
    return struct.pack("<f", float(episode_return))


def pack_bandit_reset(seed: int, config: tuple[float, float, float, float] | None = None) -> bytes:
    """BANDIT_RESET: ``u32 seed``, or ``u32 seed`` and ``f32 eta, gamma, return_low, return_high``."""
    if not 0 <= int(seed) <= 0xFFFFFFFF:
        raise ValueError(f"pack_bandit_reset: seed must be in 0..2**32-1, got {seed}")
    out = struct.pack("<I", int(seed))
    if config is not None:
        if len(config) != 4:
            raise ValueError(f"pack_bandit_reset: config is (eta, gamma, return_low, return_high), got {config!r}")
        out += struct.pack("<4f", *map(float, config))
    return out


def pack_bandit_state(s: BanditState) -> bytes:
    return _BANDIT_STATE.pack(s.arm, s.n_arms, s.episodes) + pack_floats(s.probabilities)


def unpack_bandit_state(payload: bytes) -> BanditState:
    if len(payload) < _BANDIT_STATE.size:
        raise FrameError(ErrorCode.BAD_LENGTH, f"BANDIT_STATE payload of {len(payload)} bytes is too short")
    arm, n_arms, episodes = _BANDIT_STATE.unpack_from(payload)
    p = unpack_floats(payload[_BANDIT_STATE.size:], n_arms)
    if not 1 <= n_arms <= MAX_ARMS or arm >= n_arms:
        raise FrameError(ErrorCode.BAD_LENGTH, f"BANDIT_STATE: arm {arm} of {n_arms} arms")
    return BanditState(arm, n_arms, episodes, p)

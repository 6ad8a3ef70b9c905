"""ONNX edge board: serve an exported policy over the sindyrl protocol.

A Linux board (Raspberry Pi class) runs the exported ONNX policy itself::

    sindyrl board serve policy.onnx --port /dev/ttyAMA0
    python -m firmware_bridge.serve policy.onnx --port tcp://127.0.0.1:0

and answers exactly like the microcontroller firmware (HELLO/INFO, OBS/ACT,
PING/PONG, BENCH, ERROR with a safe action), so the host's HIL runner cannot
tell them apart. ``--port`` takes a serial device or any pyserial URL,
``tcp://HOST:PORT`` (listen; port 0 picks one), or ``pty`` (create a
pseudo-terminal). Where it listens is printed on stdout as
``SINDYRL_BOARD tcp PORT`` or ``SINDYRL_BOARD pty PATH``.

The model contract: one float32 input of shape (batch, n_in) (or (n_in,)), the
first output holds the action (batch, n_out). ONNX metadata written by the
``export`` package is used when present: ``model_name`` (INFO's name),
``source_hash`` (INFO's hash: ``SparseModel.content_hash()`` of a sparse
policy; else ``source_sha256`` / ``policy_params_sha256``, else the file's
sha256) and ``output_bounds`` (``{"low": [...], "high": [...]}``: the safe
action is zero clipped into them). This module imports only onnxruntime, numpy,
pyserial, cobs and the standard library (and this package's ``protocol``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

import numpy as np

from .protocol import (
    MAX_PAYLOAD,
    BenchMode,
    BenchResult,
    BenchUnit,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameError,
    Info,
    ModelKind,
    MsgType,
    encode_frame,
    pack_bench_result,
    pack_error,
    pack_floats,
    pack_info,
    unpack_bench,
    unpack_floats,
)

__all__ = ["OnnxPolicyServer", "serve", "main"]


class OnnxPolicyServer:
    """Answers protocol frames with an onnxruntime session. Transport-free: see :func:`serve`."""

    def __init__(self, model_path, name: str | None = None):
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ValueError(f"{path}: cannot load ONNX model ({e})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected one input (the observation), found {len(inputs)}")
        shape = inputs[0].shape
        if not shape or not isinstance(shape[-1], int) or len(shape) > 2:
            raise ValueError(f"{path}: input shape {shape} must be (batch, n_in) with a fixed n_in")
        self.input_name = inputs[0].name
        self.input_rank = len(shape)
        self.n_in = int(shape[-1])
        out = self._run(np.zeros(self.n_in, np.float32))
        self.n_out = int(out.size)
        if 4 * max(self.n_in, self.n_out) > MAX_PAYLOAD - 8:
            raise ValueError(f"{path}: {self.n_in} inputs / {self.n_out} outputs exceed the protocol's payload")
        meta = self.session.get_modelmeta().custom_metadata_map
        stem = re.sub(r"[^a-z0-9_]", "_", path.stem.lower())[:32] or "onnx"
        self.name = name or meta.get("model_name", stem)[:32]
        source = meta.get("source_hash") or meta.get("source_sha256") or meta.get("policy_params_sha256")
        self.model_hash = (source or hashlib.sha256(path.read_bytes()).hexdigest())[:16]
        safe = np.zeros(self.n_out, np.float32)
        try:
            if "output_bounds" in meta:
                b = json.loads(meta["output_bounds"])
                lo = np.array([float(v) for v in b["low"]], np.float32)
                hi = np.array([float(v) for v in b["high"]], np.float32)
                if lo.shape == hi.shape == (self.n_out,):
                    safe = np.clip(safe, lo, hi)
        except (ValueError, TypeError, KeyError):
            pass  # malformed metadata: keep zeros
        self.safe_action = safe
        self.n_errors = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        feed = x[None, :] if self.input_rank == 2 else x
        return np.asarray(self.session.run(None, {self.input_name: feed})[0], np.float32).reshape(-1)

    def info(self) -> Info:
        return Info(ModelKind.ONNX, self.n_in, self.n_out, MAX_PAYLOAD, self.model_hash, self.name)

    def _error(self, code: ErrorCode, request_type: int, seq: int) -> bytes:
        self.n_errors += 1
        return encode_frame(MsgType.ERROR, seq, pack_error(code, request_type, self.safe_action))

    def handle(self, item: Frame | FrameError) -> bytes:
        """The reply (encoded, delimited) to one decoded frame or frame error."""
        if isinstance(item, FrameError):
            return self._error(item.code, 0, item.seq)
        f = item
        try:
            if f.type == MsgType.HELLO:
                if f.payload:
                    return self._error(ErrorCode.BAD_LENGTH, f.type, f.seq)
                return encode_frame(MsgType.INFO, f.seq, pack_info(self.info()))
            if f.type == MsgType.PING:
                return encode_frame(MsgType.PONG, f.seq, f.payload)
            if f.type == MsgType.OBS:
                x = unpack_floats(f.payload, self.n_in)
                if not np.all(np.isfinite(x)):
                    return self._error(ErrorCode.NONFINITE, f.type, f.seq)
                y = self._run(x)
                if not np.all(np.isfinite(y)):
                    return self._error(ErrorCode.EVAL_FAILED, f.type, f.seq)
                return encode_frame(MsgType.ACT, f.seq, pack_floats(y))
            if f.type == MsgType.BENCH:
                n, mode, x = unpack_bench(f.payload)
                if mode == BenchMode.MODEL:
                    if x.size != self.n_in:
                        return self._error(ErrorCode.BAD_LENGTH, f.type, f.seq)
                    if not np.all(np.isfinite(x)):
                        return self._error(ErrorCode.NONFINITE, f.type, f.seq)
                    t0 = time.perf_counter_ns()
                    for _ in range(n):
                        self._run(x)
                else:
                    t0 = time.perf_counter_ns()
                    k = n
                    while k > 0:
                        k -= 1
                elapsed = time.perf_counter_ns() - t0
                return encode_frame(MsgType.BENCH_RESULT, f.seq,
                                    pack_bench_result(BenchResult(n, mode, BenchUnit.NANOSECONDS, elapsed)))
        except FrameError as e:
            return self._error(e.code, f.type, f.seq)
        return self._error(ErrorCode.UNKNOWN_TYPE, f.type, f.seq)


class _Stream:
    """Blocking byte stream over a socket, a file descriptor or a pyserial port."""

    def __init__(self, read, write, close):
        self.read, self.write, self.close = read, write, close


def _serve_stream(server: OnnxPolicyServer, stream: _Stream) -> None:
    decoder = FrameDecoder()
    while True:
        data = stream.read()
        if not data:
            return
        for item in decoder.feed(data):
            stream.write(server.handle(item))


def serve(model_path, port: str, name: str | None = None, once: bool = False, out=sys.stdout) -> int:
    """Serve ``model_path`` on ``port`` until killed (or, with ``once``, until the first client leaves)."""
    server = OnnxPolicyServer(model_path, name=name)
    m = re.fullmatch(r"tcp://([^:]+):(\d+)", port)
    if m:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((m.group(1), int(m.group(2))))
        lsock.listen(1)
        print(f"SINDYRL_BOARD tcp {lsock.getsockname()[1]}", file=out, flush=True)
        while True:
            conn, _ = lsock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def recv(c=conn) -> bytes:
                try:
                    return c.recv(4096)
                except OSError:
                    return b""

            try:
                _serve_stream(server, _Stream(recv, conn.sendall, conn.close))
            except OSError:
                pass  # the client went away mid-reply; wait for the next one
            conn.close()
            if once:
                return 0
    if port == "pty":
        import termios
        import tty

        master, slave = os.openpty()
        tty.setraw(slave, termios.TCSANOW)  # no echo, no line editing: bytes pass untouched
        print(f"SINDYRL_BOARD pty {os.ttyname(slave)}", file=out, flush=True)

        def read_fd() -> bytes:
            try:
                return os.read(master, 4096)
            except OSError:
                return b""

        def write_fd(data: bytes) -> None:
            while data:
                data = data[os.write(master, data):]

        _serve_stream(server, _Stream(read_fd, write_fd, lambda: os.close(master)))
        return 0
    import serial

    try:
        ser = serial.serial_for_url(port, baudrate=115200, timeout=None)
    except (serial.SerialException, ValueError) as e:
        raise ValueError(f"cannot open port {port!r}: {e}") from None
    print(f"SINDYRL_BOARD serial {port}", file=out, flush=True)

    def read_serial() -> bytes:
        return ser.read(max(1, ser.in_waiting))

    _serve_stream(server, _Stream(read_serial, ser.write, ser.close))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="exported policy (.onnx)")
    p.add_argument("--port", required=True,
                   help="serial device or pyserial URL, tcp://HOST:PORT to listen, or 'pty'")
    p.add_argument("--name", default=None, help="model name reported in INFO (default: from the file)")
    p.add_argument("--once", action="store_true", help="exit when the first TCP client disconnects")


def run_from_args(args: argparse.Namespace) -> int:
    try:
        return serve(args.model, args.port, name=args.name, once=args.once)
    except (FileNotFoundError, ValueError) as e:
        print(f"sindyrl board serve: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.serve", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Frame protocol: CRC and COBS details, Python <-> C agreement, and fuzzing both decoders.

The fuzz corpus (random bytes, bit flips, truncation, oversize, zero-length,
bad COBS, byte substitutions, plus untouched frames) goes through the Python
stream decoder and the C stream decoder (host build, plain and under
AddressSanitizer + UBSan). Neither may crash or accept a frame whose content
differs from the frame the case was made from, and they must agree on every
accepted frame.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import struct
import subprocess

import numpy as np
import pytest
from cobs import cobs

from firmware_bridge.protocol import (
    MAX_ENCODED,
    MAX_PAYLOAD,
    SEQ_UNKNOWN,
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
    crc16,
    decode_frame,
    encode_frame,
    pack_bench,
    pack_bench_result,
    pack_error,
    pack_floats,
    pack_info,
    unpack_bench,
    unpack_bench_result,
    unpack_error,
    unpack_floats,
    unpack_info,
)

N_FUZZ = int(os.environ.get("SINDYRL_FUZZ_FRAMES", "100000"))
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


# ----------------------------------------------------------------- basics
def test_crc_is_ccitt_false_and_residue_zero():
    assert crc16(b"123456789") == 0x29B1  # the CRC-16/CCITT-FALSE check value
    f = cobs.decode(encode_frame(MsgType.OBS, 7, b"\x01\x02")[:-1])
    assert f[-2:] == crc16(f[:-2]).to_bytes(2, "big")
    assert crc16(f) == 0


@pytest.mark.parametrize("n", [0, 1, 5, 249, 250, 251, MAX_PAYLOAD])
def test_round_trip_all_lengths(n):
    rng = np.random.default_rng(n)
    payload = bytes(rng.integers(0, 256, n, dtype=np.uint8))
    wire = encode_frame(MsgType.PING, 200, payload)
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert len(wire) - 1 <= MAX_ENCODED
    assert decode_frame(wire[:-1]) == Frame(MsgType.PING, 200, payload)


def test_encode_rejects_bad_arguments():
    with pytest.raises(ValueError, match="MAX_PAYLOAD"):
        encode_frame(MsgType.PING, 0, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(ValueError, match="seq"):
        encode_frame(MsgType.PING, 256)


def test_decode_errors_are_classified():
    good = encode_frame(MsgType.PING, 3, b"\x11\x22\x33\x44")[:-1]
    assert good[0] == 11  # no zero in the frame: one COBS block, so byte 5 is payload
    flipped = bytearray(good)
    flipped[5] ^= 0x10
    with pytest.raises(FrameError) as e:
        decode_frame(bytes(flipped))
    assert e.value.code == ErrorCode.BAD_CRC
    with pytest.raises(FrameError) as e:
        decode_frame(b"\x09\x01")  # block claims 8 bytes, has 1
    assert e.value.code == ErrorCode.BAD_COBS
    with pytest.raises(FrameError) as e:
        decode_frame(cobs.encode(b"\x01\x02"))
    assert e.value.code == ErrorCode.TOO_SHORT
    with pytest.raises(FrameError) as e:
        decode_frame(b"\x01" * (MAX_ENCODED + 1))
    assert e.value.code == ErrorCode.OVERSIZE
    raw = bytes((9, MsgType.OBS, 5, 0))
    with pytest.raises(FrameError) as e:
        decode_frame(cobs.encode(raw + crc16(raw).to_bytes(2, "big")))
    assert e.value.code == ErrorCode.BAD_VERSION and e.value.seq == 5


def test_stream_decoder_resynchronises_after_garbage():
    a = encode_frame(MsgType.ACT, 1, pack_floats([0.5]))
    b = encode_frame(MsgType.ACT, 2, pack_floats([-0.5]))
    garbage = b"\x13\x37\xff\x02"
    dec = FrameDecoder()
    out = []
    stream = garbage + b"\x00" + a + b"\x00\x00" + b  # garbage, delimiter, frame, empty frames, frame
    for k in range(0, len(stream), 3):  # arrives in small pieces
        out += dec.feed(stream[k:k + 3])
    assert isinstance(out[0], FrameError)
    assert [f.seq for f in out[1:]] == [1, 2]
    assert unpack_floats(out[2].payload, 1)[0] == np.float32(-0.5)


def test_stream_decoder_bounds_memory_on_endless_input():
    dec = FrameDecoder()
    for _ in range(50):
        assert dec.feed(b"\x01" * 1000) == []
    assert len(dec._buf) <= MAX_ENCODED
    out = dec.feed(b"\x00" + encode_frame(MsgType.PONG, 9))
    assert isinstance(out[0], FrameError) and out[0].code == ErrorCode.OVERSIZE
    assert out[1] == Frame(MsgType.PONG, 9, b"")


def test_payload_codecs_round_trip_and_validate():
    info = Info(ModelKind.NEURAL, 3, 1, MAX_PAYLOAD, "0123456789abcdef", "policy")
    assert unpack_info(pack_info(info)) == info
    with pytest.raises(FrameError):
        unpack_info(pack_info(info)[:-1])
    n, mode, x = unpack_bench(pack_bench(1000, BenchMode.MODEL, [1.0, 2.0, 3.0]))
    assert (n, mode) == (1000, BenchMode.MODEL) and x.tolist() == [1.0, 2.0, 3.0]
    r = BenchResult(10, BenchMode.CALIBRATE, BenchUnit.CORE_TICKS, 2**40 + 3)
    assert unpack_bench_result(pack_bench_result(r)) == r
    e = unpack_error(pack_error(ErrorCode.NONFINITE, MsgType.OBS, [0.25, -1.0]))
    assert e.code == ErrorCode.NONFINITE and e.safe_action.tolist() == [0.25, -1.0]
    assert "NONFINITE" in e.describe() and "OBS" in e.describe()
    with pytest.raises(FrameError, match="expected 8"):
        unpack_floats(b"\x00" * 4, 2)
    with pytest.raises(ValueError, match="MAX_PAYLOAD"):
        pack_floats(np.zeros(MAX_PAYLOAD // 4 + 1))


# ------------------------------------------------------------------- fuzzing
MUTATIONS = ("valid", "bitflip", "truncate", "oversize", "zero_length", "bad_cobs", "substitute", "random")


def fuzz_corpus(n: int, seed: int = 0) -> tuple[list[bytes], list[Frame | None], list[str]]:
    """``n`` byte strings (each followed by one 0x00 when fed), the frame each came from, and the mutation."""
    rng = random.Random(seed)  # the stdlib generator: per-call numpy overhead would dominate here
    cases, origins, kinds = [], [], []
    types = [int(t) for t in MsgType]
    weights = [0.05, 0.3, 0.15, 0.05, 0.03, 0.12, 0.15, 0.15]
    for kind in rng.choices(MUTATIONS, weights=weights, k=n):
        plen = rng.randint(0, MAX_PAYLOAD) if rng.random() < 0.3 else 4 * rng.randint(0, 4)
        f = Frame(rng.choice(types), rng.randrange(256), rng.randbytes(plen))
        enc = bytearray(encode_frame(f.type, f.seq, f.payload)[:-1])
        if kind == "bitflip":
            for _ in range(rng.randint(1, 3)):
                k = rng.randrange(8 * len(enc))
                enc[k // 8] ^= 1 << (k % 8)
        elif kind == "truncate":
            enc = enc[: rng.randrange(len(enc))]
        elif kind == "oversize":
            enc += bytes(rng.randint(1, 255) for _ in range(MAX_ENCODED + 1 - len(enc) + rng.randrange(300)))
        elif kind == "zero_length":
            enc = bytearray()
        elif kind == "bad_cobs":
            k = rng.randrange(len(enc))
            enc[k] = min(255, len(enc) - k + rng.randint(1, 19))  # a block running past the end
        elif kind == "substitute":
            k = rng.randrange(len(enc))
            enc[k] = (enc[k] + rng.randint(1, 255)) % 256
        elif kind == "random":
            enc = bytearray(rng.randbytes(rng.randrange(600)))
        cases.append(bytes(enc))
        origins.append(None if kind == "random" else f)
        kinds.append(kind)
    return cases, origins, kinds


@functools.lru_cache(maxsize=4)
def corpus_with_python_results(n: int, seed: int):
    """The corpus and the Python decoder's results, shared by the tests (generating it is the slow part)."""
    cases, origins, kinds = fuzz_corpus(n, seed)
    return cases, origins, kinds, [_python_results(c) for c in cases]


def _python_results(case: bytes) -> list[tuple]:
    out = []
    for item in FrameDecoder().feed(case + b"\x00"):
        out.append(("err",) if isinstance(item, FrameError) else ("ok", item.type, item.seq, item.payload))
    return out


def _c_results(exe, cases: list[bytes], tmp_path) -> list[list[tuple]]:
    inp = tmp_path / "cases.bin"
    with inp.open("wb") as fh:
        for c in cases:
            fh.write(struct.pack("<I", len(c)) + c)
    with inp.open("rb") as fh:
        p = subprocess.run([str(exe)], stdin=fh, capture_output=True, timeout=600)
    assert p.returncode == 0, f"C decoder harness failed ({p.returncode}): {p.stderr.decode()[-3000:]}"
    data, pos, results = p.stdout, 0, []
    for _ in cases:
        n = data[pos]
        pos += 1
        res = []
        for _ in range(n):
            status, typ, seq, ln = data[pos], data[pos + 1], data[pos + 2], data[pos + 3] | (data[pos + 4] << 8)
            pos += 5
            if status == 0:
                res.append(("ok", typ, seq, bytes(data[pos:pos + ln])))
                pos += ln
            else:
                res.append(("err",))
        results.append(res)
    assert pos == len(data)
    return results


def _check_no_corrupted_accept(results, origins, kinds, who: str) -> dict:
    accepted = {k: 0 for k in MUTATIONS}
    for res, f, kind in zip(results, origins, kinds):
        for r in res:
            if r[0] != "ok":
                continue
            accepted[kind] += 1
            assert f is not None and r[1:] == (f.type, f.seq, f.payload), \
                f"{who} accepted a corrupted frame from a {kind!r} case: {r}"
    return accepted


def test_fuzz_python_decoder():
    cases, origins, kinds, results = corpus_with_python_results(N_FUZZ, 1)
    accepted = _check_no_corrupted_accept(results, origins, kinds, "Python decoder")
    n_valid = kinds.count("valid")
    assert accepted["valid"] == n_valid  # every untouched frame got through
    # zero-length cases are bare delimiters: nothing reported
    assert all(res == [] for res, k in zip(results, kinds) if k == "zero_length")


@needs_gcc
@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan-ubsan"])
def test_fuzz_c_decoder_agrees_with_python(sanitize, tmp_path):
    from firmware_bridge.build import build_decoder_harness

    exe = build_decoder_harness(tmp_path, sanitize=sanitize)
    cases, origins, kinds, py_res = corpus_with_python_results(N_FUZZ, 1)
    c_res = _c_results(exe, cases, tmp_path)
    accepted = _check_no_corrupted_accept(c_res, origins, kinds, "C decoder")
    assert accepted["valid"] == kinds.count("valid")
    for cr, pr, kind in zip(c_res, py_res, kinds):
        assert [r for r in cr if r[0] == "ok"] == [r for r in pr if r[0] == "ok"], kind
        assert len(cr) == len(pr), f"{kind}: C reported {len(cr)} frames, Python {len(pr)}"


def test_seq_unknown_is_reserved():
    assert SEQ_UNKNOWN == 0xFF

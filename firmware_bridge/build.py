"""Build the board firmware (host process or a bare-metal Cortex-M image) from generated C.

``build_firmware(gen, target)`` compiles the portable board (``board/``), the
target's HAL and the generated model with the project's strict flags
(``-std=c99 -Wall -Wextra -Werror -pedantic``; emlearn's headers come in with
``-isystem``) and reads flash and RAM use from ``size`` /
``arm-none-eabi-size`` (Berkeley format: flash = text + data, RAM = data + bss,
the stack reserve included in bss).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .codegen import GeneratedC
from .protocol import MAX_PAYLOAD

#: Largest model the protocol carries: BENCH sends 5 bytes + the inputs, ERROR 2 bytes + the outputs.
MAX_INPUTS = (MAX_PAYLOAD - 5) // 4
MAX_OUTPUTS = (MAX_PAYLOAD - 2) // 4

__all__ = [
    "BOARD_DIR", "TARGETS", "ARM_TARGETS", "ArmTarget", "MAX_INPUTS", "MAX_OUTPUTS", "STRICT_CFLAGS", "CORTEX_M4F_FLAGS",
    "CORTEX_M0_FLAGS", "FirmwareBuild", "BuildError",
    "missing_tools", "build_firmware", "build_decoder_harness", "build_shared_library", "section_sizes",
]

BOARD_DIR = Path(__file__).resolve().parent / "board"
STRICT_CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-ffp-contract=off"]
CORTEX_M4F_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
CORTEX_M0_FLAGS = ["-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"]  # no FPU: float is libgcc's software emulation


@dataclass(frozen=True)
class ArmTarget:
    """A bare-metal firmware target: compiler flags, and its folder under ``board/`` (start-up, HAL, linker script)."""

    cpu_flags: tuple[str, ...]
    folder: str
    linker_script: str
    sources: tuple[str, ...]


#: Bare-metal targets (arm-none-eabi-gcc, newlib nosys); each is a folder of board/.
ARM_TARGETS = {
    "mps2-an386": ArmTarget(tuple(CORTEX_M4F_FLAGS), "mps2-an386", "mps2-an386.ld", ("startup.c", "../cortex_m_start.c", "hal_mps2.c")),
    "stm32f405": ArmTarget(tuple(CORTEX_M4F_FLAGS), "stm32f405", "stm32f405.ld", ("startup.c", "../cortex_m_start.c", "hal_stm32f405.c")),
    "microbit": ArmTarget(tuple(CORTEX_M0_FLAGS), "microbit", "nrf51.ld", ("startup.c", "../cortex_m_start.c", "hal_nrf51.c")),
}
TARGETS = ("host", *ARM_TARGETS)
_TOOLS = {"host": ("gcc", "size"), **{t: ("arm-none-eabi-gcc", "arm-none-eabi-size") for t in ARM_TARGETS}}
_QEMU = "qemu-system-arm"


class BuildError(RuntimeError):
    """The compiler or linker failed; the message carries its command and output."""


@dataclass(frozen=True)
class FirmwareBuild:
    """A linked firmware and its memory use in bytes."""

    target: str
    path: Path
    model: GeneratedC
    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss


def missing_tools(target: str, with_qemu: bool = False) -> list[str]:
    """Tools needed for ``target`` that are not on PATH (empty when all are there)."""
    if target not in _TOOLS:
        raise ValueError(f"unknown firmware target {target!r}; expected one of {TARGETS}")
    tools = list(_TOOLS[target]) + ([_QEMU] if with_qemu and target in ARM_TARGETS else [])
    return [t for t in tools if shutil.which(t) is None]


def _run(cmd: list[str], what: str) -> None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} not found on PATH") from None
    if p.returncode != 0:
        raise BuildError(f"{what} failed ({' '.join(map(str, cmd))}):\n{p.stdout}{p.stderr}")


def section_sizes(path: Path, target: str) -> tuple[int, int, int]:
    """(text, data, bss) of a linked binary, from the Berkeley output of ``size``."""
    size = _TOOLS[target][1]
    p = subprocess.run([size, "-B", str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError(f"{size} failed on {path}: {p.stderr}")
    fields = p.stdout.strip().splitlines()[-1].split()
    return int(fields[0]), int(fields[1]), int(fields[2])


def _glue(gen: GeneratedC, out_dir: Path) -> Path:
    """board_model.c: points the board at the generated model's entry point."""
    m = gen.macro
    kind = 1 if gen.kind == "sparse" else 2
    text = f"""/* Written by firmware_bridge.build: the model this firmware serves. */
#include "sindyrl_board.h"
#include "{gen.header.name}"

static const float safe_action[{m}_N_OUT] = {m}_SAFE_ACTION;

#if defined(SINDYRL_DOMAIN_GUARD) && defined({m}_IN_LO)
static const float in_lo[{m}_N_IN] = {m}_IN_LO;
static const float in_hi[{m}_N_IN] = {m}_IN_HI;
#define SINDYRL_GLUE_IN_LO in_lo
#define SINDYRL_GLUE_IN_HI in_hi
#else
#define SINDYRL_GLUE_IN_LO NULL
#define SINDYRL_GLUE_IN_HI NULL
#endif

const sindyrl_model_desc_t sindyrl_board_model = {{
    {m}_NAME, {m}_HASH, {kind}u, {m}_N_IN, {m}_N_OUT, {gen.symbol}, safe_action, SINDYRL_GLUE_IN_LO, SINDYRL_GLUE_IN_HI
}};
"""
    if gen.n_arms > 0:  # a policy set: the board's EXP3-IX picks the arm gen.symbol evaluates
        text += f"""
static const sindyrl_policy_set_desc_t policy_set = {{
    {m}_N_ARMS, sindyrl_{gen.name}_select, {m}_ETA, {m}_GAMMA, {m}_RETURN_LOW, {m}_RETURN_HIGH, {m}_SEED
}};

const sindyrl_policy_set_desc_t *const sindyrl_board_policy_set = &policy_set;
"""
    else:
        text += "\nconst sindyrl_policy_set_desc_t *const sindyrl_board_policy_set = NULL;\n"
    path = out_dir / "board_model.c"
    path.write_text(text)
    return path


def build_firmware(
    gen: GeneratedC,
    target: str = "host",
    out_dir: str | os.PathLike | None = None,
    sanitize: bool = False,
    opt: str = "-O2",
    domain_guard: float | None = None,
) -> FirmwareBuild:
    """Compile and link the board firmware serving ``gen``.

    Parameters
    ----------
    gen : GeneratedC
        Output of :func:`firmware_bridge.codegen.generate_c`.
    target : {"host", "mps2-an386", "stm32f405", "microbit"}
        ``host``: a POSIX executable (``--tcp PORT`` / ``--pty`` / ``--stdio``);
        any of :data:`ARM_TARGETS`: a bare-metal ELF (run in QEMU by
        :class:`firmware_bridge.boards.QemuBoard`, or flashed).
    out_dir : path, optional
        Where to put the glue file and the binary (default: next to the generated C).
    sanitize : bool
        Host only: build with ``-fsanitize=address,undefined``.
    domain_guard : float, optional
        Build with ``-DSINDYRL_DOMAIN_GUARD=margin``: an observation outside the
        model's input bounds widened by ``margin`` times their width is answered
        with ERROR ``OUT_OF_DOMAIN`` and the safe action (sparse models with
        ``input_bounds`` only).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown firmware target {target!r}; expected one of {TARGETS}")
    if sanitize and target != "host":
        raise ValueError("sanitize=True is only available for the host target")
    if not 1 <= gen.n_in <= MAX_INPUTS or not 1 <= gen.n_out <= MAX_OUTPUTS:
        raise ValueError(
            f"build_firmware: model {gen.name} has {gen.n_in} inputs and {gen.n_out} outputs; the board protocol "
            f"carries 1..{MAX_INPUTS} inputs and 1..{MAX_OUTPUTS} outputs"
        )
    if domain_guard is not None:
        if not (float(domain_guard) >= 0 and np.isfinite(domain_guard)):
            raise ValueError(f"build_firmware: domain_guard must be a finite margin >= 0, got {domain_guard!r}")
        if gen.input_low is None:
            raise ValueError(f"build_firmware: domain_guard needs a model with input_bounds; {gen.name} has none")
    missing = missing_tools(target)
    if missing:
        raise BuildError(f"cannot build for {target}: missing {', '.join(missing)}")
    out_dir = Path(out_dir) if out_dir is not None else gen.source.parent / f"build-{target}"
    out_dir.mkdir(parents=True, exist_ok=True)
    glue = _glue(gen, out_dir)
    common = [*STRICT_CFLAGS, opt, f"-I{BOARD_DIR}", f"-I{gen.header.parent}"]
    common += [f"-isystem{d}" for d in gen.include_dirs]
    if domain_guard is not None:
        common.append(f"-DSINDYRL_DOMAIN_GUARD={float(domain_guard)!r}f")
    srcs = [BOARD_DIR / "sindyrl_board.c", BOARD_DIR / "sindyrl_protocol.c", BOARD_DIR / "sindyrl_bandit.c",
            gen.source, *gen.extra_sources, glue]
    if target == "host":
        exe = out_dir / ("board-host-asan" if sanitize else "board-host")
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"] if sanitize else []
        cmd = ["gcc", *common, *san, *map(str, srcs), str(BOARD_DIR / "host" / "hal_host.c"), "-lm", "-o", str(exe)]
    else:
        arm = ARM_TARGETS[target]
        exe = out_dir / f"board-{target}.elf"
        tdir = BOARD_DIR / arm.folder
        cmd = [
            "arm-none-eabi-gcc", *arm.cpu_flags, *common, "-ffunction-sections", "-fdata-sections",
            "-nostartfiles", "--specs=nosys.specs", f"-T{tdir / arm.linker_script}", "-Wl,--gc-sections",
            *map(str, srcs), *[str(tdir / f) for f in arm.sources], "-lm", "-o", str(exe),
        ]
    _run(cmd, f"building {target} firmware for {gen.name}")
    text, data, bss = section_sizes(exe, target)
    return FirmwareBuild(target=target, path=exe, model=gen, text=text, data=data, bss=bss)


def build_decoder_harness(out_dir: str | os.PathLike, sanitize: bool = False) -> Path:
    """The host program that feeds byte streams to the C stream decoder (see board/fuzz/)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / ("decoder-fuzz-asan" if sanitize else "decoder-fuzz")
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"] \
        if sanitize else []
    cmd = ["gcc", *STRICT_CFLAGS, "-O1", *san, f"-I{BOARD_DIR}", str(BOARD_DIR / "sindyrl_protocol.c"),
           str(BOARD_DIR / "fuzz" / "decoder_fuzz.c"), "-o", str(exe)]
    _run(cmd, "building the decoder harness")
    return exe


def build_shared_library(gen: GeneratedC, out_dir: str | os.PathLike | None = None) -> Path:
    """The generated model alone as a host shared library (for ctypes checks against Python)."""
    out_dir = Path(out_dir) if out_dir is not None else gen.source.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"lib{gen.name}.so"
    cmd = ["gcc", *STRICT_CFLAGS, "-O2", "-shared", "-fPIC", f"-I{gen.header.parent}",
           *[f"-isystem{d}" for d in gen.include_dirs], str(gen.source), *map(str, gen.extra_sources), "-lm", "-o",
           str(lib)]
    _run(cmd, f"building the shared library for {gen.name}")
    return lib

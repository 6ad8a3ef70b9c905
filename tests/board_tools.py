"""Shared by the board tests: skip when the toolchain or QEMU is missing, unless CI requires them."""

import os

import pytest

from firmware_bridge.build import missing_tools


def need_tools(target: str, with_qemu: bool = False) -> None:
    missing = missing_tools(target, with_qemu=with_qemu)
    if missing:
        if os.environ.get("SINDYRL_REQUIRE_QEMU"):
            pytest.fail(f"SINDYRL_REQUIRE_QEMU is set but {', '.join(missing)} missing")
        pytest.skip(f"missing {', '.join(missing)}")

"""The transfer state table."""

from __future__ import annotations

import itertools

import pytest

from p2pshare.core.transfers import FINAL, can_move


def test_upload_happy_path_and_replacement_loop() -> None:
    path = [
        "planned",
        "hashing",
        "reserving",
        "pushing",
        "reserving",
        "pushing",
        "registering",
        "completed",
    ]
    assert all(can_move("upload", a, b) for a, b in itertools.pairwise(path))


def test_an_upload_with_nothing_to_send_registers_right_after_hashing() -> None:
    path = ["planned", "hashing", "registering", "completed"]
    assert all(can_move("upload", a, b) for a, b in itertools.pairwise(path))


def test_download_happy_path() -> None:
    path = ["planned", "fetching", "verifying", "completed"]
    assert all(can_move("download", a, b) for a, b in itertools.pairwise(path))


@pytest.mark.parametrize("final", sorted(FINAL))
def test_final_states_are_final(final: str) -> None:
    for new in ["planned", "fetching", "failed", "cancelled", "completed"]:
        assert not can_move("download", final, new)  # type: ignore[arg-type]


def test_skips_are_refused() -> None:
    assert not can_move("upload", "planned", "pushing")
    assert not can_move("upload", "hashing", "completed")
    assert not can_move("download", "planned", "completed")
    assert not can_move("download", "fetching", "pushing")
    assert can_move("download", "fetching", "failed")
    assert can_move("upload", "planned", "cancelled")

"""The pure parts of bench/suite.py: row names, the smoke check, the markdown table."""

from __future__ import annotations

import argparse
import copy
from typing import Any

import pytest

from tests.unit.bench.loader import load_bench

suite = load_bench("suite")


def smoke_plan() -> Any:
    args = argparse.Namespace(smoke=True, only=None, size=None, rounds=None, no_anchors=True)
    return suite.make_plan(args)


def row(name: str, value: float = 10.0, **extra: Any) -> dict[str, Any]:
    return {
        "workload": name,
        "unit": "MB/s",
        "ours": value,
        "runs": [value],
        "anchors": {},
        "limit": None,
        **extra,
    }


def complete_doc() -> dict[str, Any]:
    names = [
        "limit-tcp",
        "limit-sha256",
        "limit-disk",
        "download-1",
        "download-3",
        "upload",
        "download-1-encrypted",
        "upload-encrypted",
        "memory",
        "scaling-16m",
        "scaling-32m",
        "scaling-files-100",
        "scaling-files-1000",
        "download-1-tls",
        "upload-tls",
    ]
    rows = [row(n) for n in names]
    rows.append(row("tracker-tls", 800.0, p50_ms=55.0, p99_ms=210.0))
    rows.append(row("tracker", 900.0, p50_ms=50.0, p99_ms=200.0))
    return {"machine": {}, "rows": rows}


def test_a_complete_smoke_document_passes() -> None:
    assert suite.check(complete_doc(), smoke_plan()) == []


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d["rows"].pop(0), "no row limit-tcp"),
        (lambda d: d["rows"][3].update(ours=0.0), "download-1: ours is 0.0"),
        (lambda d: d["rows"][3].update(ours=None), "download-1: ours is None"),
        (lambda d: d["rows"][4].update(runs=[5.0, 0]), "download-3: runs"),
        (lambda d: d["rows"][5].update(runs=[]), "upload: runs"),
        (lambda d: d["rows"][3].update(anchors={"aria2c": 0}), "anchor aria2c"),
        (lambda d: d["rows"][3].update(limit={"name": "sha256", "value": None}), "limit"),
        (lambda d: d["rows"][-1].update(p99_ms=None), "tracker: p50/p99"),
        (lambda d: d["rows"][-2].update(p50_ms=0.0), "tracker-tls: p50/p99"),
        (lambda d: d["rows"].pop(-2), "no row tracker-tls"),
        (lambda d: d["rows"][8].update(error="RuntimeError: boom"), "memory: RuntimeError"),
    ],
)
def test_the_smoke_check_fails_on_a_missing_or_non_positive_number(
    change: Any, needle: str
) -> None:
    doc = copy.deepcopy(complete_doc())
    change(doc)
    problems = suite.check(doc, smoke_plan())
    assert any(needle in p for p in problems), problems


def test_a_failed_anchor_is_null_and_does_not_fail_the_check() -> None:
    doc = complete_doc()
    doc["rows"][3]["anchors"] = {"libtorrent": None, "aria2c": 300.0}
    assert suite.check(doc, smoke_plan()) == []


def test_row_names_and_order() -> None:
    assert [suite.size_tag(n) for n in (64 << 20, 512 << 20, 4 << 30)] == ["64m", "512m", "4g"]
    assert [suite.count_tag(n) for n in (100, 1000, 10_000, 100_000)] == [
        "100",
        "1000",
        "10k",
        "100k",
    ]
    names = ["scaling-files-100k", "scaling-4g", "tracker", "scaling-64m", "limit-tcp"]
    names += ["scaling-files-100", "scaling-512m", "scaling-files-10k"]
    assert sorted(names, key=suite.sort_key) == [
        "limit-tcp",
        "tracker",
        "scaling-64m",
        "scaling-512m",
        "scaling-4g",
        "scaling-files-100",
        "scaling-files-10k",
        "scaling-files-100k",
    ]


def test_the_table_shows_ratios_and_targets() -> None:
    doc = complete_doc()
    doc["rows"][3].update(
        ours=100.0,
        anchors={"libtorrent": 400.0, "aria2c": None},
        limit={"name": "sha256", "value": 1000.0},
    )
    doc["rows"][6].update(unit="MiB", targets={"every node < 150 MiB": False})
    doc["machine"] = {
        "date": "2030-01-01T00:00:00Z",
        "cpu": "cpu",
        "cores": 2,
        "ram": "24 GiB",
        "kernel": "6",
        "python": "3.11",
        "packages": {"p2pshare": "0.1.0"},
    }
    doc["settings"] = {
        "rounds": 3,
        "warmup": True,
        "size": 1 << 30,
        "total_seconds": 1000.0,
        "smoke": False,
    }
    md = suite.markdown(doc)
    assert "libtorrent 400 (x0.25), aria2c failed" in md
    assert "sha256 1,000 (x0.10)" in md
    assert "every node < 150 MiB: NOT met" in md


def full_plan(*only: str) -> Any:
    args = argparse.Namespace(
        smoke=False, only=list(only) or None, size=None, rounds=None, no_anchors=False
    )
    return suite.make_plan(args)


def test_the_disk_the_plans_need() -> None:
    gib, mib = 2**30, 2**20
    # the whole plan peaked at 34.3 GiB in use; its largest file is 4 GiB
    assert suite.disk_needed(full_plan()) == 34 * gib
    assert suite.disk_needed(full_plan("download-3")) == 19 * gib  # no 4 GiB file
    assert suite.disk_needed(smoke_plan()) == 5 * 32 * mib + 14 * 16 * mib


def test_too_little_free_space_is_refused_before_any_work(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Usage:
        free = 100 * 2**20  # the smoke plan needs about 384 MiB

    monkeypatch.setattr(suite.shutil, "disk_usage", lambda path: Usage())
    work, out = tmp_path / "work", tmp_path / "results"
    argv = ["suite.py", "--smoke", "--workdir", str(work), "--out", str(out)]
    monkeypatch.setattr(suite.sys, "argv", argv)
    assert suite.main() == 2
    err = capsys.readouterr().err
    assert "has 100.0 MiB free, and this plan needs about 384.0 MiB" in err
    assert list(work.iterdir()) == []  # no work dir made, nothing run
    assert not out.exists()


def test_the_targets_of_the_issue_are_judged_from_one_run() -> None:
    rows = [
        row("download-1", 616.0, anchors={"libtorrent": 219.0, "aria2c": 212.0}),
        row("download-3", 645.0, anchors={"libtorrent": 255.0, "aria2c": 449.0}),
        row("upload", 174.0, limit={"name": "disk / 3", "value": 260.0}),
        row("download-1-tls", 377.0, anchors={"libtorrent": 219.0, "aria2c": 212.0}),
        row("tracker", 4661.0, p50_ms=12.8, p99_ms=28.9, anchors={"opentracker": 3734.0}),
        row("scaling-64m", 353.0),
        row("scaling-512m", 542.0),
        row("scaling-4g", 744.0),
        row("scaling-files-100", 0.25, unit="ms"),
        row("scaling-files-10k", 0.4, unit="ms"),
        row("scaling-files-100k", 0.52, unit="ms"),
        row("memory", 124.0, unit="MiB", targets={"every node < 150 MiB": True}),
    ]
    suite.judge(rows)
    got = {r["workload"]: r.get("targets") for r in rows}
    assert got == {
        "download-1": {">= 1.5x libtorrent": True},
        "download-3": {">= 1.5x the best client": False},  # 645 < 1.5 x 449
        "upload": {">= 70% of disk / 3": False},  # 174 < 0.7 x 260
        "download-1-tls": None,
        "tracker": {">= 5,000 announces/s": False, "p99 < 50 ms": True},
        "scaling-64m": None,
        "scaling-512m": None,
        "scaling-4g": {">= 90% of scaling-512m's MB/s": True},
        "scaling-files-100": None,
        "scaling-files-10k": None,
        "scaling-files-100k": {"p50 within 2x of scaling-files-100's": False},  # 0.52 > 0.5
        "memory": {"every node < 150 MiB": True},
    }
    md = suite.targets_of(rows[2])
    assert md == ">= 70% of disk / 3: NOT met"


def test_a_target_whose_figure_is_missing_is_not_judged() -> None:
    rows = [
        row("download-1", 616.0, anchors={"libtorrent": None, "aria2c": 212.0}),
        row("download-3", 645.0, anchors={"libtorrent": None, "aria2c": None}),
        row("upload", 174.0, error="RuntimeError: boom"),
        row("tracker", 6000.0, p99_ms=None),
        row("scaling-512m", 542.0),
        row("scaling-4g", 480.0),
    ]
    suite.judge(rows)
    got = {r["workload"]: r.get("targets") for r in rows}
    assert got == {
        "download-1": {">= 1.5x libtorrent": None},
        "download-3": {">= 1.5x the best client": None},
        "upload": None,  # a failed row is not judged at all
        "tracker": {">= 5,000 announces/s": True, "p99 < 50 ms": None},
        "scaling-512m": None,
        "scaling-4g": {">= 90% of scaling-512m's MB/s": False},
    }
    assert "not judged" in suite.targets_of(rows[0])


def test_the_clients_durable_figures_count_the_rounds_their_speeds_count() -> None:
    # the first durable figure is the warm-up's (not in anchor_values); a client with no
    # counted round has none; one whose durable figures are missing is left out
    durable = {"libtorrent": [100.0, 300.0, 200.0, 250.0], "aria2c": [90.0]}
    counted = {"libtorrent": [600.0, 500.0, 550.0], "aria2c": [], "other": [1.0]}
    assert suite.durable_medians(durable, counted) == {"libtorrent": 250.0}


def test_the_durable_figures_are_noted_with_our_ratio_to_each() -> None:
    r = row("download-3", 600.0, anchors_durable={"libtorrent": 200.0, "aria2c": 240.0})
    note = suite.notes_of(r)
    assert "the clients to a durable copy" in note
    assert "libtorrent 200 MB/s (x3.00), aria2c 240 MB/s (x2.50)" in note
    assert "durable copy" not in suite.notes_of(row("download-3", 600.0, anchors_durable={}))

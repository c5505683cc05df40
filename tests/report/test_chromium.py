"""Headless Chromium renders report.html: section headings, inline images, a non-blank page."""

import os
import re
import subprocess

import pytest

from ablate.report import generate_report

from .synthetic import make_sweep

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed"),
]


def _chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(tmp_path):
    out = generate_report(make_sweep(tmp_path, journal=True), tmp_path / "out", presets=[])
    url = (out / "report.html").resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url).stdout
    for h in ["Overview", "Findings", "Leaderboard", "Slot effects", "Robust aggregates", "Curves",
              "Failed and stopped trials", "Sample generations"]:
        assert re.search(rf"<h2[^>]*>{re.escape(h)}</h2>", dom), h
    imgs = re.findall(r'<img src="(data:image/png;base64,[^"]{100,})"', dom)
    assert len(imgs) >= 7
    assert "<script>alert" not in dom  # the hostile sample stayed text
    # reads at a glance: findings first, configuration last, generations collapsed
    h2 = re.findall(r"<h2[^>]*>([^<]+)</h2>", dom)
    assert h2[:2] == ["Overview", "Findings"] and h2[-1] == "Configuration", h2
    assert "<details open" not in dom and dom.count("<details>") >= 2

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", url)
    if os.environ.get("ABLATE_KEEP_SCREENSHOT"):  # to look at it: the figures and layout
        import shutil

        shutil.copy(shot, os.environ["ABLATE_KEEP_SCREENSHOT"])
    assert shot.is_file()
    from matplotlib.image import imread

    px = imread(str(shot))[..., :3]
    assert px.shape[0] >= 1000 and px.shape[1] >= 1000
    non_white = (px < 0.95).any(axis=-1).mean()
    assert px.std() > 0.05 and 0.02 < non_white < 0.9, (px.std(), non_white)

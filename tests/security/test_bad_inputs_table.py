"""Every case of the counting script (tests/security/bad_inputs.py) ends in one line, exit 2,
before anything is created: no traceback, no silently accepted nonsense, no files."""

from __future__ import annotations

from tests.security.bad_inputs import _stub_trainer, cases, classify, run_case


def test_every_bad_input_is_one_clean_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    undo = _stub_trainer()
    bad = []
    try:
        all_cases = cases()
        for i, case in enumerate(all_cases):
            out = run_case(case, tmp_path / f"c{i}")
            kind = classify(out)
            if kind not in ("clean", "clean_no_allowed"):
                bad.append((case.kind, case.label, kind, out.error_lines[-1:] or out.crashed))
    finally:
        undo()
    assert len(all_cases) >= 150
    assert bad == []
    assert not (tmp_path / "cache").exists()

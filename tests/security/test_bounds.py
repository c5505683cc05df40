"""Names, paths, resource bounds and YAML bounds: one line before anything starts."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path

import pytest

from ablate.errors import ConfigError
from ablate.spec.yaml import MAX_NODES, load_file, loads
from tests.security.common import run_cli, write_space

BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text,needle", [
    (BOMB, f"more than {MAX_NODES} nodes"),
    ("a: 1\nb: 2\na: 3\n", "key 'a' appears twice"),
    ("x: {k: 1, k: 2}\n", "key 'k' appears twice"),
    ("a: [1\n", "invalid YAML"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "YAML"),
])
def test_yaml_bounds(text, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        loads(text, "t.yaml")
    assert "\n" not in str(e.value)


def test_yaml_aliases_within_bounds_and_files(tmp_path):
    assert loads("a: &x {k: 1}\nb: *x\n") == {"a": {"k": 1}, "b": {"k": 1}}
    bad = tmp_path / "s.yaml"
    bad.write_bytes(b"name: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_file(bad)
    big = tmp_path / "big.yaml"
    big.write_text("a: '" + "x" * (2 << 20) + "'\n")
    with pytest.raises(ConfigError, match="at most"):
        load_file(big)


@pytest.mark.parametrize("argv,needle", [
    (["name=../../x"], "name: got '../../x'"),
    (["name=/abs/path"], "name: got '/abs/path'"),
    (["name=a..b"], "name: got"),
    (["run_dir=/tmp/ablate_outside_test"], "--allow-outside"),
    (["run_dir=../x"], "--allow-outside"),
    (["threads=100000"], "threads: got 100000"),
    (["seed=12345678901234567890"], "seed: got 12345678901234567890"),
    (["train.lr=1e308"], "train.lr"),
    (["model.dtype=float16"], "model.dtype: got 'float16'"),
    (["~train"], "train cannot be removed"),
    (["train.group_size=1"], "train.group_size: got 1 with the group-relative advantage"),
    (["resources.workers=64"], "resources.workers: got 64"),
    (["train.prompts_per_step=4", "train.group_size=4", "train.microbatches=1000"], "train.microbatches"),
    (["train.warmup_steps=100"], "train.warmup_steps: got 100"),
    (["method=[grpo,dapo]"], "method: got '[grpo,dapo]'"),
    (["rollout.max_new_tokens=500"], "model.max_position_embeddings=128"),
    (["resources.gpu_per_worker=1"], "resources.gpu_per_worker"),
    (["model.path=/nonexistent/ckpt"], "model.path"),
    (["run_dir=runs/../../escape"], "--allow-outside"),
])
def test_train_bad_input_is_one_line(argv, needle, tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    out = run_cli(["train", *argv], tmp_path / "wd")
    assert out.clean, out
    assert needle in out.stderr and "allowed" in out.stderr, out.stderr


def test_run_dir_outside_is_allowed_with_the_flag(tmp_path, monkeypatch):
    """--allow-outside lets the path through to the next check (here: an unwritable dir)."""
    target = Path("/proc/ablate_cannot_write/run")
    out = run_cli(["train", f"run_dir={target}", "model.warm_start=null", "--allow-outside"],
                  tmp_path / "wd")
    assert out.clean and "run_dir: cannot write" in out.stderr, out


def test_disk_full_mid_run_leaves_no_running_summary(tmp_path, monkeypatch):
    """The final summary cannot be written (ENOSPC): one line, and summary.json says failed."""
    import ablate.tracking.tracker as tr
    import ablate.train.trainer as trainer

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer.Trainer, "__init__", full)
    real_finish = tr.Tracker.finish

    def finish(self, status, summary=None, error=None):
        if status == "failed":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_finish(self, status, summary, error)

    monkeypatch.setattr(tr.Tracker, "finish", finish)
    out = run_cli(["train", "tracker=none", "run_dir=runs/r", "model.warm_start=null"],
                  tmp_path / "wd")
    assert out.rc == 1 and len(out.error_lines) == 1 and "No space left" in out.stderr, out
    summary = json.loads((tmp_path / "wd" / "runs" / "r" / "summary.json").read_text())
    assert summary["status"] == "failed"


@pytest.mark.parametrize("space,args,needle", [
    ({"seeds": 5000}, [], "seeds: got 5000"),
    ({"search": {"algorithm": "random", "num_samples": 1e9}}, [], "search.num_samples"),
    ({"search": {"algorithm": "random", "num_samples": 2, "seed": -1}}, [], "search.seed: got -1"),
    ({"resources": {"cpu": 1000}}, [], "resources.cpu: each trial needs 1000"),
    ({"resources": {"cpu": 1, "gpu": 1}}, [], "resources.gpu"),
    ({"scheduler": {"type": "asha", "time_attr": "epoch", "max_t": 4}}, [], "scheduler.time_attr"),
    ({"name": "../x"}, [], "name: got '../x'"),
    ({"output_dir": "/tmp/ablate_elsewhere"}, [], "--allow-outside"),
    ({}, ["--num-cpus", "0"], "--num-cpus: got 0"),
    ({}, ["--num-cpus", "-1"], "--num-cpus: got -1"),
    ({}, ["--name", "a/b"], "name: got 'a/b'"),
])
def test_sweep_bad_input_is_one_line(space, args, needle, tmp_path):
    f = write_space(tmp_path / "s.yaml", **space)
    out = run_cli(["sweep", str(f), "--dry-run", *args], tmp_path / "wd")
    assert out.clean and needle in out.stderr, out


def test_outside_output_dir_with_the_flag(tmp_path):
    f = write_space(tmp_path / "s.yaml", output_dir=str(tmp_path / "elsewhere"))
    out = run_cli(["sweep", str(f), "--dry-run", "--allow-outside"], tmp_path / "wd")
    assert out.rc == 0, out
    assert not (tmp_path / "elsewhere").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("space,args,needle", [
    ({}, ["--address", f"127.0.0.1:{_free_port()}"], "nothing answers"),
    ({"seeds": 200}, [], "pass --yes"),
])
def test_real_sweep_refused_before_ray(space, args, needle, tmp_path, monkeypatch, no_ray):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    f = write_space(tmp_path / "s.yaml", **space)
    out = run_cli(["sweep", str(f), *args], tmp_path / "wd")
    assert out.clean and needle in out.stderr, out


def test_jsonl_without_numeric_answers_is_refused(tmp_path):
    from ablate.tasks import build_task

    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"word{i}"}) + "\n"
                         for i in range(5)))
    with pytest.raises(ConfigError, match="task.answer_key: no reference answer"):
        build_task({"_target_": "ablate.tasks.jsonl_math.JsonlMath", "path": str(p)})

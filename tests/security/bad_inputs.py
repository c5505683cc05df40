"""Count how ablate answers bad inputs: ``python -m tests.security.bad_inputs [-v]``.

Each case runs the CLI in-process (``ablate train ...`` or ``ablate sweep <file> --dry-run ...``)
in an empty working directory. A train case that passes validation would start training: the
trainer is replaced by a stub that stops it, and the case counts as "silently accepted". Prints
the table: tried / one clean line (exit 2, one line, nothing created) / of those without
"allowed" / traceback or crash / silently accepted / files created before failing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

from tests.security.common import Outcome, run_cli

SECRET_VAR = "ABLATE_BAD_INPUTS_FAKE_KEY"


class Accepted(BaseException):
    """Raised by the stub trainer: validation let the input through."""


@dataclass
class Case:
    kind: str  # "train" or "sweep"
    label: str
    argv: list[str] = field(default_factory=list)  # train overrides, or extra sweep CLI args
    space: Optional[object] = None  # sweep: a mapping (dumped to YAML), or raw text / bytes
    dry: bool = True  # sweep: --dry-run


# ------------------------------------------------------------------------------ train cases
TRAIN_BAD = [
    # the examples
    "train.lr=1e308", "seed=12345678901234567890", "model.dtype=float16", "~train",
    "run_dir=/proc/ablate_cannot_write/x", "train.group_size=1", "resources.workers=64",
    "train.microbatches=1000", "train.warmup_steps=100", "method=[grpo,dapo]",
    "rollout.max_new_tokens=500", "threads=100000", "name=../../x", "name=/abs/path",
    "name=${oc.env:HOME}", "tracker.wandb.tags=[${oc.env:%s}]" % SECRET_VAR,
    "eval.num_prompts=100000", "eval.num_prompts=5000", "model.path=/nonexistent/model",
    "device=cuda", "resources.gpu_per_worker=1",
    # types and ranges
    "train.steps=2.5", "train.steps=-1", "train.steps=abc", "train.steps=true", "train.steps=null",
    "train.steps=0", "train.lr=0", "train.lr=-1", "train.lr=nan", "train.lr=inf", "train.lr=1e-400",
    "train.lr=abc", "train.betas=[0.9]", "train.betas=[1.5,0.9]", "train.betas=abc",
    "train.scheduler=cosin", "eval.n=0", "eval.every=-1", "eval.temperature=0",
    "model.hidden_size=0", "model.num_heads=3", "model.num_kv_heads=3", "model.arch=gpt",
    "model.dtype=int8", "rollout.temperature=0", "rollout.top_p=1.5", "rollout.top_k=-1",
    "rollout.max_new_tokens=0", "device=tpu", "device=cuda:x", "seed=-1", "seed=1.5", "threads=0",
    "threads=-4", "resources.workers=0", "resources.strategy=zero", "resources.backend=mpi",
    "train.save_model=always", "train.checkpoint_every=-1", "model.warm_start.steps=-1",
    "model.warm_start.target_pass1=2", "model.warm_start.lr=1e9", "tracker.wandb.mode=cloud",
    "train.prompts_per_step=1000000", "train.group_size=1000000", "eval.num_samples_logged=-1",
    "train.max_grad_norm=0", "train.weight_decay=-0.1", "model.max_position_embeddings=0",
    "train.epochs=0", "train.minibatches=0", "train.minibatches=1000", "train.log_every=0",
    "model.seed=-3", "model.seed=99999999999999999999", "model.rope_theta=0",
    "model.intermediate_size=-5", "train.skip_grad_norm=0", "resources.cpu_per_worker=0",
    # unknown names
    "tracker=nope", "mask=clip_hgher", "advantage=nope", "aggregation=bogus", "method=nope",
    "task=nope", "model=huge", "rollout=sglang", "train.stpes=3", "+train.foo=1", "eval.nn=1",
    "mask.eps_low=abc", "mask.nope=1", "aggregation.mode=nope",
    # names and paths
    "name=", "name=a/b", "name=.hidden", "name=a..b", "name=" + "x" * 300, "run_dir=/tmp/elsewhere",
    "run_dir=../outside", "name=${oc.env:%s}" % SECRET_VAR, "run_dir=${oc.env:HOME}",
    # code and environment from config
    "task._target_=os.system", "task._target_=subprocess.Popen", "rollout._target_=builtins.eval",
    "critic._target_=os.system", "+pipeline.x={_target_: os.system}",
    "objective.terms.pg._target_=os.system", "mask._target_=ablate.tasks.arithmetic.Arithmetic",
    "advantage._target_=subprocess.Popen", "aggregation._target_=builtins.exec",
    "+pipeline.stages=[{_target_: os.system, command: 'touch pwned'}]",
    "tracker.wandb.project=${oc.env:%s}" % SECRET_VAR, "train.steps=${oc.env:STEPS}",
    "task.seed=${oc.decode:'1'}", "+method.note=${oc.env:%s,x}" % SECRET_VAR,
    # removed or missing groups
    "hydra.searchpath=[file:///tmp]", "+hydra.job.chdir=true", "hydra/job_logging=disabled",
    "~rollout", "~tracker", "~model", "~task", "~seed", "task=gsm8k_jsonl",
    "task.digits=0", "task.digits=-1", "task.eval_size=0", "task._target_=",
]
TRAIN_MULTI = [  # several overrides together
    ["task=gsm8k_jsonl", "task.path=/nonexistent/data.jsonl"],
    ["train.prompts_per_step=4", "train.group_size=4", "train.microbatches=32"],
    ["train.steps=5", "train.warmup_steps=6"],
    ["advantage=rloo", "train.group_size=1"],
    ["train.prompts_per_step=2", "resources.workers=3"],
    ["model.max_position_embeddings=8"],
    ["model.hidden_size=30", "model.num_heads=4"],
]


# ------------------------------------------------------------------------------ sweep cases
def _space(**kw) -> dict:
    base = {"name": "bad", "metric": "eval/pass@1", "seeds": [0], "base_overrides": ["train.steps=1"]}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

SWEEP_BAD: list[tuple[str, object]] = [
    ("non-UTF-8 file", b"name: \xff\xfe bad\nmetric: m\n"),
    ("alias bomb", "name: bad\nmetric: eval/pass@1\ndescription: x\n" + "x_" + BOMB.replace("\n", "\nx_", 0)),
    ("duplicate keys", "name: bad\nmetric: eval/pass@1\nname: other\n"),
    ("duplicate nested keys", "name: bad\nmetric: eval/pass@1\nsearch: {algorithm: grid, algorithm: random}\n"),
    ("empty file", ""),
    ("top-level list", "- a\n- b\n"),
    ("invalid YAML", "name: [unclosed\n"),
    ("deep nesting", "name: bad\nmetric: m\ndescription: " + "[" * 5000 + "]" * 5000 + "\n"),
    ("search.seed -1", _space(search={"algorithm": "random", "num_samples": 2, "seed": -1})),
    ("num_samples 1e9", _space(search={"algorithm": "random", "num_samples": 1e9})),
    ("num_samples 0", _space(search={"algorithm": "random", "num_samples": 0})),
    ("num_samples 2.5", _space(search={"algorithm": "random", "num_samples": 2.5})),
    ("seeds 5000", _space(seeds=5000)),
    ("seeds -1", _space(seeds=-1)),
    ("seeds [0,0]", _space(seeds=[0, 0])),
    ("seeds [1.5]", _space(seeds=[1.5])),
    ("seeds [-3]", _space(seeds=[-3])),
    ("seeds 20-digit", _space(seeds=[12345678901234567890])),
    ("seeds []", _space(seeds=[])),
    ("name ../x", _space(name="../x")),
    ("name /abs", _space(name="/abs")),
    ("name missing", _space(name=None)),
    ("name oc.env", _space(name="${oc.env:HOME}")),
    ("metric missing", _space(metric=None)),
    ("mode maxx", _space(mode="maxx")),
    ("algorithm nope", _space(search={"algorithm": "nope"})),
    ("grid + num_samples", _space(search={"algorithm": "grid", "num_samples": 3})),
    ("random without num_samples", _space(search={"algorithm": "random"})),
    ("asha time_attr nope", _space(scheduler={"type": "asha", "time_attr": "epoch", "max_t": 4})),
    ("asha max_t 0", _space(scheduler={"type": "asha", "max_t": 0})),
    ("asha grace >= max_t", _space(scheduler={"type": "asha", "max_t": 4, "grace_period": 4})),
    ("asha rf 1", _space(scheduler={"type": "asha", "max_t": 4, "reduction_factor": 1})),
    ("scheduler nope", _space(scheduler={"type": "hyperband"})),
    ("resources cpu 1000", _space(resources={"cpu": 1000})),
    ("resources gpu 1 on CPU", _space(resources={"cpu": 1, "gpu": 1})),
    ("resources cpu 0", _space(resources={"cpu": 0})),
    ("resources workers 0", _space(resources={"cpu": 1, "workers": 0})),
    ("resources cpu nan", _space(resources={"cpu": float("nan")})),
    ("resources extra key", _space(resources={"cpu": 1, "memory": 10})),
    ("max_concurrent 0", _space(max_concurrent=0)),
    ("max_failures -1", _space(max_failures=-1)),
    ("output_dir empty", _space(output_dir="")),
    ("output_dir outside", _space(output_dir="/tmp/ablate_elsewhere")),
    ("output_dir oc.env", _space(output_dir="${oc.env:HOME}")),
    ("wandb mode nope", _space(wandb={"mode": "cloud"})),
    ("wandb project oc.env", _space(wandb={"project": "${oc.env:%s}" % SECRET_VAR})),
    ("slots unknown variant", _space(slots={"mask": ["nope"]})),
    ("slots method", _space(slots={"method": ["grpo"]})),
    ("slots unknown group", _space(slots={"foo": ["x"]})),
    ("slots duplicate option", _space(slots={"mask": ["ppo_clip", "ppo_clip"]})),
    ("methods unknown", _space(methods=["nope"])),
    ("param low > high", _space(search={"algorithm": "random", "num_samples": 2},
                                params={"train.lr": {"type": "uniform", "low": 1, "high": 0}})),
    ("param type nope", _space(params={"train.lr": {"type": "normal"}})),
    ("loguniform low 0", _space(search={"algorithm": "random", "num_samples": 2},
                                params={"train.lr": {"type": "loguniform", "low": 0, "high": 1}})),
    ("param key seed", _space(params={"seed": [1, 2]})),
    ("param key group", _space(params={"mask": ["none"]})),
    ("param choice dict", _space(params={"train.lr": [{"a": 1}]})),
    ("param when unknown axis", _space(params={"train.lr": {"type": "choice", "values": [0.1],
                                                              "when": {"mask": ["none"]}}})),
    ("param value out of range", _space(params={"train.lr": [1e308]})),
    ("base_overrides not override", _space(base_overrides=["notanoverride"])),
    ("base_overrides seed", _space(base_overrides=["seed=3"])),
    ("base_overrides oc.env", _space(base_overrides=["tracker.wandb.tags=[${oc.env:%s}]" % SECRET_VAR])),
    ("base_overrides Popen", _space(base_overrides=["task._target_=subprocess.Popen",
                                                    "+task.args='touch pwned'", "+task.shell=true"])),
    ("base_overrides os.system stage", _space(base_overrides=["+pipeline.stages=[{_target_: os.system}]"])),
    ("base_overrides lr 1e308", _space(base_overrides=["train.lr=1e308"])),
    ("base_overrides group_size 1", _space(base_overrides=["train.group_size=1"])),
    ("base_overrides dtype float16", _space(base_overrides=["model.dtype=float16"])),
    ("base_overrides threads", _space(base_overrides=["threads=100000"])),
    ("base_overrides method list", _space(base_overrides=["method=[grpo,dapo]"])),
    ("base_overrides workers > prompts", _space(base_overrides=["train.prompts_per_step=2",
                                                                "resources.workers=4"])),
    ("trainable os.system", _space(trainable="os.system")),
    ("trainable path", _space(trainable="ablate.cli.main")),
    ("unknown top-level key", _space(shell="rm -rf /")),
    ("claims not a list", _space(claims="x")),
    ("report bad", _space(report={"metrics": [1]})),
    ("report unknown key", _space(report={"plots": 1})),
    ("huge file", "name: bad\nmetric: m\ndescription: '" + "x" * (2 << 20) + "'\n"),
]
SWEEP_ARGS_BAD = [
    ("--num-cpus 0", ["--num-cpus", "0"]),
    ("--num-cpus -1", ["--num-cpus", "-1"]),
    ("--num-cpus nan", ["--num-cpus", "nan"]),
    ("--name ../x", ["--name", "../x"]),
    ("--output-dir outside", ["--output-dir", "/tmp/ablate_elsewhere"]),
    ("override oc.env", ["tracker.wandb.group=${oc.env:%s}" % SECRET_VAR]),
    ("override Popen", ["task._target_=subprocess.Popen"]),
    ("--plugins bad name", ["--plugins", "os;rm"]),
]
SWEEP_RUN_BAD = [  # real runs (no --dry-run): refused before Ray or any file
    ("--address nothing listens", _space(), ["--address", "127.0.0.1:9"]),
    ("--address auto without cluster", _space(), ["--address", "auto"]),
    ("large sweep without --yes", _space(seeds=200), []),
    ("real run Popen", _space(base_overrides=["task._target_=subprocess.Popen"]), []),
]


def cases() -> list[Case]:
    out = [Case("train", ov, [ov]) for ov in TRAIN_BAD]
    out += [Case("train", " ".join(m), m) for m in TRAIN_MULTI]
    out += [Case("sweep", label, [], space) for label, space in SWEEP_BAD]
    out += [Case("sweep", label, args, _space()) for label, args in SWEEP_ARGS_BAD]
    out += [Case("sweep", label, args, space, dry=False) for label, space, args in SWEEP_RUN_BAD]
    return out


# ------------------------------------------------------------------------------- running
def _stub_trainer() -> Callable[[], None]:
    """Replace the Trainer so an accepted train input stops before training; returns undo."""
    import ablate.train.trainer as tr

    orig = tr.Trainer.__init__

    def init(self, *a, **k):
        raise Accepted()

    tr.Trainer.__init__ = init  # type: ignore[method-assign]
    return lambda: setattr(tr.Trainer, "__init__", orig)


def run_case(case: Case, root: Path) -> Outcome:
    wd = root / "wd"
    wd.mkdir(parents=True)
    if case.kind == "train":
        return run_cli(["train", "-q", *case.argv], wd)
    f = root / "space.yaml"
    sp = case.space
    if isinstance(sp, bytes):
        f.write_bytes(sp)
    elif isinstance(sp, str):
        f.write_text(sp, encoding="utf-8")
    else:
        f.write_text(yaml.safe_dump(sp, sort_keys=False), encoding="utf-8")
    return run_cli(["sweep", str(f), *(["--dry-run"] if case.dry else []), *case.argv], wd)


def classify(out: Outcome) -> str:
    if "Accepted" in out.crashed or out.rc == 0:
        return "accepted"
    if out.crashed or out.rc not in (1, 2) or len(out.error_lines) != 1:
        return "traceback"
    if out.created:
        return "files"
    if out.rc == 2 and out.error_lines[0].startswith("error: "):
        return "clean" if "allowed" in out.error_lines[0] else "clean_no_allowed"
    return "traceback"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.security.bad_inputs")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case's outcome")
    ap.add_argument("-k", default="", help="only cases whose label contains this")
    args = ap.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ[SECRET_VAR] = "fake-secret-bad-inputs"
    undo = _stub_trainer()
    table: dict[str, dict[str, int]] = {}
    bad: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["ABLATE_CACHE"] = str(Path(tmp) / "cache")
            for i, case in enumerate(c for c in cases() if args.k in c.label):
                out = run_case(case, Path(tmp) / f"c{i}")
                kind = classify(out)
                if os.environ[SECRET_VAR] in out.stderr + out.stdout:
                    kind = "files"  # a leaked secret counts as something written
                row = table.setdefault(case.kind, {})
                row["tried"] = row.get("tried", 0) + 1
                row[kind] = row.get(kind, 0) + 1
                line = (out.error_lines or [out.crashed or "(no output)"])[-1][:160]
                if kind != "clean" or args.verbose:
                    bad.append(f"  [{case.kind}] {case.label[:60]!r}: {kind}: rc={out.rc} {line}"
                               + (f" created={out.created}" if out.created else ""))
    finally:
        undo()
    cols = ("tried", "clean", "clean_no_allowed", "traceback", "accepted", "files")
    heads = ("tried", "one clean line", 'clean, no "allowed"', "traceback/crash",
             "silently accepted", "files created")
    print("| | " + " | ".join(heads) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for kind in ("train", "sweep"):
        row = table.get(kind, {})
        print(f"| `ablate {kind}` | " + " | ".join(str(row.get(c, 0)) for c in cols) + " |")
    if bad:
        print("\n".join(["", "cases that are not one clean line:" if not args.verbose else "cases:",
                         *bad]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One-GPU smoke check (``bash bench/gpu_smoke.sh``, ≤ 8 min on one GPU): writes
``bench/results/gpu-<date>.json``.

1. rollout tokens/s, HF ``generate`` vs vLLM, same model (a 4-layer 512-wide Llama built from
   config, saved to a temporary checkpoint) and the same sampling settings;
2. a few GRPO steps with ``rollout=vllm`` (weights pushed every step) and their Pass@k;
3. a 2-trial sweep with ``resources.gpu: 0.5`` (two trials share the GPU);
4. a 2-worker trial over NCCL (``resources.workers=2``, half a GPU each).

Each part is recorded as ok / error with its message, so one failure does not hide the others.
Needs a CUDA GPU and ``pip install -e '.[gpu,test]'`` (vLLM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["train.steps=4", "train.prompts_per_step=32", "train.group_size=8", "eval.every=0",
         "eval.num_prompts=64", "eval.n=8", "tracker=wandb", "device=cuda", "-q"]


def _part(results: dict, name: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = {"status": "ok", **fn()}
    except Exception as e:  # record and continue: the other parts still say something
        results[name] = {"status": "error", "error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()[-2000:]}
    results[name]["wall_s"] = round(time.perf_counter() - t0, 2)
    print(f"[gpu_smoke] {name}: {results[name]['status']} ({results[name]['wall_s']} s)", flush=True)


def rollout_throughput() -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ablate.policy.tokenizer import build_tokenizer
    from ablate.rollout.hf import HFEngine
    from ablate.rollout.vllm import VLLMEngine
    from ablate.tasks import build_task

    task = build_task("addition")
    tok = build_tokenizer(task.alphabet(), model_max_length=4096)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                      num_attention_heads=8, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    prompts = [p.prompt for p in task.eval_problems(128)]
    kw = dict(temperature=1.0, top_p=1.0, max_new_tokens=128)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        tok.save_pretrained(d)
        model.config._name_or_path = d
        for name, eng in (("hf", HFEngine(**kw)), ("vllm", VLLMEngine(**kw, gpu_memory_utilization=0.3))):
            eng.generate(model, tok, prompts[:8], 2, generator=torch.Generator().manual_seed(0),
                         compute_logprobs=False)  # warm-up (vLLM engine start, CUDA graphs off)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            o = eng.generate(model, tok, prompts, 8, generator=torch.Generator().manual_seed(1),
                             compute_logprobs=False)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            toks = float(o.response_mask.sum())
            out[name] = {"tokens": toks, "seconds": round(dt, 3), "tokens_per_s": round(toks / dt, 1)}
    out["vllm_over_hf"] = round(out["vllm"]["tokens_per_s"] / out["hf"]["tokens_per_s"], 2)
    return out


def _ablate(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "ablate.cli", *args], cwd=ROOT, env=env, timeout=timeout,
                          capture_output=True, text=True)


def grpo_with_vllm(run_root: Path) -> dict:
    rd = run_root / "grpo-vllm"
    p = _ablate("train", "method=grpo", "rollout=vllm", f"run_dir={rd}", *TRAIN)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
    s = json.loads((rd / "summary.json").read_text())
    return {"steps": s["steps_done"], "initial": s["initial_eval"],
            "final": {k: v for k, v in s["final"].items() if k.startswith("eval/")}}


def fractional_sweep(run_root: Path) -> dict:
    space = run_root / "gpu_sweep.yaml"
    space.write_text(
        "name: gpu-smoke\nbase_overrides: [device=cuda, train.steps=4, eval.every=0, train.prompts_per_step=16]\n"
        "slots: {mask: [ppo_clip, none]}\nseeds: [0]\nmetric: eval/pass@1\nmode: max\n"
        "resources: {cpu: 1, gpu: 0.5}\nmax_concurrent: 2\n")
    p = _ablate("sweep", str(space), "--output-dir", str(run_root / "sweeps"), "--no-report", timeout=300)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
    from ablate.tracking.trials import read_trials

    rows = read_trials(run_root / "sweeps" / "gpu-smoke")
    return {"trials": len(rows), "finished": sum(r["status"] == "finished" for r in rows)}


def nccl_two_workers(run_root: Path) -> dict:
    rd = run_root / "nccl-2w"
    p = _ablate("train", "method=grpo", f"run_dir={rd}", "resources.workers=2", "resources.gpu_per_worker=0.5",
                "resources.backend=nccl", *TRAIN)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
    s = json.loads((rd / "summary.json").read_text())
    return {"steps": s["steps_done"], "final_pass1": s["final"].get("eval/pass@1")}


def main() -> int:
    import torch
    if not torch.cuda.is_available():
        print("[gpu_smoke] no CUDA GPU: nothing to check here (this script is for a GPU machine)")
        return 2
    results: dict = {"date": date.today().isoformat(), "gpu": torch.cuda.get_device_name(0),
                     "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="ablate-gpu-smoke-") as d:
        root = Path(d)
        _part(results, "rollout_tokens_per_s", rollout_throughput)
        _part(results, "grpo_vllm", lambda: grpo_with_vllm(root))
        _part(results, "sweep_fractional_gpu", lambda: fractional_sweep(root))
        _part(results, "nccl_two_workers", lambda: nccl_two_workers(root))
    out = ROOT / "bench" / "results" / f"gpu-{results['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True))
    print(f"[gpu_smoke] wrote {out}")
    return 0 if all(v.get("status") == "ok" for v in results.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())

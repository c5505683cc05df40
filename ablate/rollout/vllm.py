"""vLLM rollout engine (GPU only; ``pip install 'ablate-upge[gpu]'``).

vLLM only samples token ids here; the behaviour log-probs are recomputed with the trainer's own
:func:`ablate.policy.forward.token_logprobs` on the HF model (as verl does), so ρ ≡ 1 before the
first update whatever vLLM's logprob mode. The engine runs colocated in the trainer process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as TRL's colocate mode) and ``sync_weights`` pushes the HF
parameters into the vLLM model with ``load_weights`` after each optimizer step.

Status: written against the documented ``vllm.LLM`` / ``SamplingParams`` API; not exercised by the
CPU test suite (vLLM is not installable there). On a CPU machine it fails at construction with a
one-line ConfigError.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal, Optional

import torch

from ablate.errors import ConfigError
from ablate.spec.params import Gt, NonNeg, Num, PosFrac, PosInt
from ablate.rollout.base import IS_CORRECTIONS, RolloutEngine, RolloutOutput
from ablate.policy.forward import pad_rows
from ablate.rollout.common import assemble, eos_ids_of, seed_from

NEEDS = "rollout=vllm needs a GPU and the `gpu` extra (pip install 'ablate-upge[gpu]'); use rollout=hf on CPU"


class VLLMEngine(RolloutEngine):
    def __init__(self, temperature: NonNeg = 1.0, top_p: PosFrac = 1.0, max_new_tokens: Optional[PosInt] = None,
                 top_k: int = 0, gpu_memory_utilization: PosFrac = 0.4, dtype: str = "auto",
                 enforce_eager: bool = True, max_model_len: Optional[PosInt] = None,
                 logprob_batch_size: Optional[PosInt] = None, logprobs: Literal["trainer", "engine"] = "trainer",
                 is_correction: Literal[IS_CORRECTIONS] = "none", is_cap: Annotated[Num, Gt(1)] = 2.0,
                 sleep_mode: bool = False):
        if not torch.cuda.is_available():
            raise ConfigError(NEEDS)
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise ConfigError(NEEDS) from None
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.top_k, self.gpu_memory_utilization, self.dtype = top_k, gpu_memory_utilization, dtype
        self.enforce_eager, self.max_model_len = enforce_eager, max_model_len
        self.logprob_batch_size, self.logprobs = logprob_batch_size, logprobs
        self.reports_logprobs = logprobs == "engine"  # keep vLLM's own log-probs for the IS correction
        self.set_correction(is_correction, is_cap)
        self.sleep_mode = bool(sleep_mode)  # colocated: release GPU memory between generations
        self._llm = None
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    # -- engine lifecycle -------------------------------------------------------------------
    def _ensure_llm(self, model: torch.nn.Module, tokenizer) -> None:
        if self._llm is not None:
            return
        from vllm import LLM

        path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
        if not (path and (Path(path) / "config.json").is_file()):
            # an in-memory model (tiny / warm-started): hand vLLM a checkpoint on disk
            self._tmp = tempfile.TemporaryDirectory(prefix="ablate-vllm-")
            path = self._tmp.name
            from ablate.policy.lora import is_lora, merged
            if is_lora(model):  # a base-architecture checkpoint with the adapters merged
                with merged(model) as state:
                    model.get_base_model().save_pretrained(path, state_dict=state, safe_serialization=True)
            else:
                model.save_pretrained(path, safe_serialization=True)
            tokenizer.save_pretrained(path)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the model in-process
        kw = dict(model=path, tokenizer=path, dtype=self.dtype, enforce_eager=self.enforce_eager,
                  gpu_memory_utilization=self.gpu_memory_utilization, seed=0,
                  enable_sleep_mode=self.sleep_mode)
        if self.max_model_len:
            kw["max_model_len"] = int(self.max_model_len)
        self._llm = LLM(**kw)
        self.sync_weights(model)  # the checkpoint on disk may predate in-memory updates

    def _vllm_model(self):
        eng = self._llm.llm_engine
        paths = (
            lambda: eng.model_executor.driver_worker.worker.model_runner.model,
            lambda: eng.engine_core.engine_core.model_executor.driver_worker.worker.model_runner.model,
            lambda: eng.model_executor.driver_worker.model_runner.model,
        )
        for get in paths:
            try:
                m = get()
                if m is not None:
                    return m
            except AttributeError:
                continue
        raise RuntimeError("rollout=vllm: cannot reach the in-process vLLM model to load weights "
                           "(this vLLM version runs it out of process; set VLLM_ENABLE_V1_MULTIPROCESSING=0)")

    def sync_weights(self, model: torch.nn.Module) -> None:
        if self._llm is None:
            return
        if self.sleep_mode:
            self._llm.wake_up()
        from ablate.policy.lora import is_lora, merged
        target = self._vllm_model()
        with torch.no_grad():
            if is_lora(model):  # vLLM holds the base architecture: push base + merged adapters
                with merged(model) as state:
                    target.load_weights(((n, t.detach()) for n, t in state.items()))
            else:
                target.load_weights(((name, t.detach()) for name, t in model.state_dict().items()))
        self._llm.reset_prefix_cache()
        if self.sleep_mode:
            self._llm.sleep(level=1)

    # -- sampling ---------------------------------------------------------------------------
    def generate(self, model: torch.nn.Module, tokenizer, prompts: list[str], n: int, *,
                 temperature: Optional[float] = None, top_p: Optional[float] = None,
                 max_new_tokens: Optional[int] = None,
                 generator: Optional[torch.Generator] = None,
                 compute_logprobs: bool = True) -> RolloutOutput:
        from vllm import SamplingParams

        self._ensure_llm(model, tokenizer)
        if self.sleep_mode:
            self._llm.wake_up()
        temperature = self.temperature if temperature is None else float(temperature)
        top_p = self.top_p if top_p is None else float(top_p)
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if max_new_tokens is None:
            raise ValueError("generate: no max_new_tokens (the trainer passes the resolved budget)")
        device = next(model.parameters()).device
        eos_ids = eos_ids_of(model, tokenizer)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]

        prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        seed = seed_from(generator)
        sp = dict(n=n, temperature=max(temperature, 0.0), top_p=top_p, max_tokens=max_new_tokens,
                  stop_token_ids=eos_ids, skip_special_tokens=True)
        if self.top_k > 0:
            sp["top_k"] = self.top_k
        if self.reports_logprobs:
            sp["logprobs"] = 0  # the sampled token's log-prob
        requests = []
        for j, ids in enumerate(prompt_ids):
            params = SamplingParams(**sp, seed=None if seed is None else (seed + j) % (2**31))
            requests.append(({"prompt_token_ids": list(ids)}, params))
        outs = self._llm.generate([r[0] for r in requests], [r[1] for r in requests], use_tqdm=False)
        if self.sleep_mode:
            self._llm.sleep(level=1)

        rows: list[list[int]] = []
        eng_lp: list[list[float]] = []
        for o in outs:  # one RequestOutput per prompt, in order
            if len(o.outputs) != n:
                raise RuntimeError(f"rollout=vllm: expected {n} samples per prompt, got {len(o.outputs)}")
            for c in o.outputs:
                ids = list(c.token_ids)
                lps = [float(d[t].logprob) for d, t in zip(c.logprobs, ids)] if self.reports_logprobs else []
                if c.finish_reason == "stop" and (not ids or ids[-1] not in eos_ids):
                    ids.append(eos_ids[0])  # stopped on EOS but the id was not returned
                    lps.append(0.0)
                rows.append(ids[:max_new_tokens])
                eng_lp.append(lps[:max_new_tokens])
        p_ids, p_att = pad_rows([prompt_ids[i // n] for i in range(len(rows))], pad_id, left=True)
        resp, _ = pad_rows(rows, pad_id, left=False, min_width=1)
        out = assemble(model, tokenizer, p_ids.to(device), p_att.to(device), resp.to(device), eos_ids,
                       pad_id, temperature if temperature > 0 else 1.0, self.logprob_batch_size,
                       compute_logprobs=compute_logprobs)
        if self.reports_logprobs:
            lp = torch.zeros(out.response_mask.shape, device=device)
            for i, row in enumerate(eng_lp):
                if row:
                    lp[i, :len(row)] = torch.tensor(row[: lp.shape[1]], device=device)
            out.engine_logp = lp * out.response_mask
        return out

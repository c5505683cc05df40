"""LoRA through peft: only the adapters train, the frozen base doubles as the KL reference model
(adapters disabled), checkpoints hold the adapters, and engines with their own weights (vLLM)
receive the merged weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional

import torch

from ablate.errors import ConfigError


def _lora_defaults() -> dict:
    from ablate.schema import LoraSchema  # the one source of model.lora's defaults
    return LoraSchema().model_dump()


LORA_FIELDS = _lora_defaults()


def lora_config(cfg: Optional[Mapping[str, Any]]):
    """peft LoraConfig from ``model.lora`` ({r, alpha, dropout, target_modules}); None = no LoRA."""
    if cfg is None or cfg is False:
        return None
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"model.lora: expected a mapping {{r, alpha, dropout, target_modules}} or null, got {cfg!r}")
    unknown = sorted(set(cfg) - set(LORA_FIELDS))
    if unknown:
        raise ConfigError(f"model.lora: unknown field {unknown[0]!r}; allowed: {', '.join(LORA_FIELDS)}")
    c = {**LORA_FIELDS, **cfg}
    if not isinstance(c["r"], int) or isinstance(c["r"], bool) or c["r"] < 1:
        raise ConfigError(f"model.lora.r: expected an integer >= 1, got {c['r']!r}")
    if not isinstance(c["alpha"], (int, float)) or c["alpha"] <= 0:
        raise ConfigError(f"model.lora.alpha: expected a number > 0, got {c['alpha']!r}")
    if not isinstance(c["dropout"], (int, float)) or not 0 <= c["dropout"] < 1:
        raise ConfigError(f"model.lora.dropout: expected a number in [0, 1), got {c['dropout']!r}")
    from peft import LoraConfig
    tm = c["target_modules"]
    return LoraConfig(r=int(c["r"]), lora_alpha=float(c["alpha"]), lora_dropout=float(c["dropout"]),
                      target_modules=list(tm) if isinstance(tm, (list, tuple)) else tm,
                      task_type="CAUSAL_LM")


def apply_lora(model: torch.nn.Module, cfg: Optional[Mapping[str, Any]]) -> torch.nn.Module:
    lc = lora_config(cfg)
    if lc is None:
        return model
    from peft import get_peft_model
    return get_peft_model(model, lc)


def is_lora(model: torch.nn.Module) -> bool:
    from peft import PeftModel
    return isinstance(model, PeftModel)


class FrozenBase(torch.nn.Module):
    """The reference policy of a LoRA model: the same module with its adapters disabled."""

    def __init__(self, peft_model: torch.nn.Module):
        super().__init__()
        self.peft_model = peft_model

    def forward(self, **kwargs):
        with self.peft_model.disable_adapter():
            return self.peft_model(**kwargs)


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict
    set_peft_model_state_dict(model, dict(state))


@contextmanager
def merged(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """The base model's state dict with the adapters merged in (names as in the base checkpoint)."""
    model.merge_adapter()
    try:
        base = model.get_base_model()
        yield {k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if "lora_" not in k}
    finally:
        model.unmerge_adapter()


def policy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a trial checkpoint keeps of the policy: the adapters under LoRA, else everything."""
    return adapter_state(model) if is_lora(model) else model.state_dict()


def load_policy_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    if is_lora(model):
        load_adapter_state(model, state)
    else:
        model.load_state_dict(dict(state))

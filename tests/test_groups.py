"""The one list of groups and families (ablate/spec/groups.py) matches conf/ and the component bases."""

from __future__ import annotations

import importlib
import inspect

import yaml

from ablate.registry import conf_dir, families
from ablate.spec.groups import FAMILY_BASES, GROUPS, SLOT_FAMILIES, SWEEP_GROUPS, UPGE_SLOTS, base_name


def test_groups_are_conf_defaults_in_order():
    defaults = yaml.safe_load((conf_dir() / "config.yaml").read_text())["defaults"]
    groups = tuple(next(iter(d)) for d in defaults if isinstance(d, dict))
    assert groups == GROUPS
    assert "critic" in GROUPS and "method" not in SWEEP_GROUPS


def test_every_conf_folder_is_a_group_and_back():
    folders = {p.name for p in conf_dir().iterdir() if p.is_dir()}
    assert folders == set(GROUPS)


def test_family_bases_resolve_to_component_classes():
    from ablate.upge.slots.base import FAMILIES

    bases = families()
    assert set(bases) == set(FAMILY_BASES)
    for fam, cls in FAMILIES.items():  # the slot module's own table agrees
        assert bases[fam] is cls
    for fam, cls in bases.items():
        assert inspect.isclass(cls) and cls.__name__ == base_name(fam)
    assert set(UPGE_SLOTS) < set(SLOT_FAMILIES) <= set(bases)


def test_every_variant_subclasses_its_family_base():
    """Each conf/<slot family>/*.yaml names a class of that family (the registry's build check)."""
    bases = families()
    for fam in SLOT_FAMILIES + ("critic",):
        for path in sorted((conf_dir() / fam).glob("*.yaml")):
            target = yaml.safe_load(path.read_text())["_target_"]
            mod, _, name = target.rpartition(".")
            cls = getattr(importlib.import_module(mod), name)
            assert issubclass(cls, bases[fam]), path

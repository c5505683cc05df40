"""Safe YAML for files users share (search spaces, claims, conf variants): bounded and unambiguous.

PyYAML's ``safe_load`` builds no objects, but a 520-byte alias bomb still expands to gigabytes,
and a repeated key silently keeps the last value. Here a document is refused, with one line, when
it is larger than ``MAX_BYTES``, is not UTF-8, expands to more than ``MAX_NODES`` nodes, or holds
a key twice in one mapping.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB of text: a search space or claims file is a few KB
MAX_NODES = 100_000  # nodes after alias expansion
# libyaml's safe loader where PyYAML was built with it: the same documents as yaml.SafeLoader, ~10x
# faster; for files ablate wrote or ships (a run's config.yaml, the method catalog), unbounded
TRUSTED_LOADER = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts constructed nodes (aliases count at every use) and rejects
    duplicate keys."""

    def __init__(self, stream: str, source: str):
        super().__init__(stream)
        self.source = source
        self.nodes = 0

    def _count(self, node: yaml.Node) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConfigError(f"{self.source}: the YAML expands to more than {MAX_NODES} nodes "
                              "(an alias bomb?); allowed: a plain document without deep aliases")

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        self._count(node)
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it itself
                if dup:
                    line = key_node.start_mark.line + 1
                    raise ConfigError(f"{self.source}:{line}: key {key!r} appears twice in one "
                                      "mapping; allowed: each key once")
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 floats (`1e-5`, `1.0e6`: PyYAML's 1.1 rules read them as strings), as OmegaConf reads them,
# so that a variant file's numbers are numbers to the typed constructors (strings are not coerced)
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _expanded_size(node: yaml.Node, memo: dict, limit: int) -> int:
    """Nodes the tree under ``node`` has once aliases are expanded (stops past ``limit``)."""
    key = id(node)
    if key in memo:
        return memo[key]
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_size(child, memo, limit)
            if total > limit:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, memo, limit) + _expanded_size(v, memo, limit)
            if total > limit:
                break
    memo[key] = total
    return total


def loads(text: str, source: str = "YAML") -> Any:
    """Parse one YAML document with the bounds above; one-line ConfigError otherwise."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters; allowed: at most {MAX_BYTES}")
    loader = _Loader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, MAX_NODES) > MAX_NODES:
            raise ConfigError(f"{source}: the YAML expands to more than {MAX_NODES} nodes (an "
                              "alias bomb?); allowed: a plain document without deep aliases")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML; allowed: a YAML mapping "
                          f"({' '.join(str(e).split())[:300]})") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML nests too deeply; allowed: a plain document") from None
    finally:
        loader.dispose()


def load_file(path: str | Path, source: str | None = None) -> Any:
    """Read ``path`` (UTF-8, at most MAX_BYTES) and parse it with :func:`loads`."""
    path = Path(path)
    source = source or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"{source}: {size} bytes; allowed: at most {MAX_BYTES}")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{source}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text (byte {e.start}); allowed: a UTF-8 YAML "
                          "file") from None
    return loads(text, source)

"""Reading a config file as written: a mapping that names a key twice is refused (YAML and JSON would silently
keep the last)."""
from __future__ import annotations

from ..errors import ConfigError


def unique_keys(pairs):
    """A mapping that names a key twice is a mistake (the last would silently win): refuse it, naming the key."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(f"{key!r} is given twice: keep one (the file would otherwise silently use the last, "
                              f"{value!r}).")
        seen[key] = value
    return seen


def unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            pairs = [(self.construct_object(k, deep=deep), self.construct_object(v, deep=deep)) for k, v in node.value]
            return unique_keys(pairs)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                    lambda loader, node: loader.construct_mapping(node, deep=True))
    return UniqueKeyLoader


def keys_in(path) -> set[str]:
    """The top-level keys a config file writes (what the user set), read again after RunConfig.load checked it."""
    import json
    from pathlib import Path

    import yaml

    text = Path(path).read_text()
    data = yaml.safe_load(text) if Path(path).suffix in (".yaml", ".yml") else json.loads(text)
    return set(data or {})

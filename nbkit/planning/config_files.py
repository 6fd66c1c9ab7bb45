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


def read_mapping(path) -> dict:
    """The mapping a YAML or JSON config file writes, keys as written (what the user set); a missing file, a key
    named twice, a syntax error or anything but a mapping is a ConfigError naming the file."""
    import json
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist (or is not a file).")
    text = path.read_text()
    is_yaml = path.suffix in (".yaml", ".yml")
    try:
        data = (yaml.load(text, Loader=unique_key_loader()) or {}) if is_yaml else \
            json.loads(text, object_pairs_hook=unique_keys)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {'YAML' if is_yaml else 'JSON'}: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of RunConfig fields.")
    return data

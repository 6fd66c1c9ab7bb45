"""Reading a config file as written: YAML or JSON, a key named twice refused, every problem naming the file."""
import pytest

from nbkit.errors import ConfigError
from nbkit.planning.config_files import read_mapping, unique_keys


def test_yaml_and_json_read_as_written(tmp_path):
    (tmp_path / "run.yaml").write_text("learning_rate: 2e-4\nlora_r: 8\nmodel: nbkit/tiny-llama\n")
    (tmp_path / "run.json").write_text('{"lora_r": 8, "packing": "off"}')
    assert read_mapping(tmp_path / "run.yaml") == {"learning_rate": "2e-4", "lora_r": 8, "model": "nbkit/tiny-llama"}
    assert read_mapping(tmp_path / "run.json") == {"lora_r": 8, "packing": "off"}


@pytest.mark.parametrize("name, text", [("run.yaml", "lora_r: 8\nbatch_size: 2\nlora_r: 16\n"),
                                        ("run.json", '{"lora_r": 8, "lora_r": 16}')])
def test_a_key_named_twice_is_refused_naming_the_key_and_the_file(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=r"run\.(yaml|json): 'lora_r' is given twice"):
        read_mapping(tmp_path / name)


def test_a_key_twice_in_a_nested_mapping_is_refused_too(tmp_path):
    (tmp_path / "run.yaml").write_text("extra:\n  weight_decay: 0.1\n  weight_decay: 0.0\n")
    with pytest.raises(ConfigError, match="'weight_decay' is given twice"):
        read_mapping(tmp_path / "run.yaml")


def test_what_is_not_a_readable_mapping_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_mapping(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        read_mapping(tmp_path)  # a folder
    (tmp_path / "bad.json").write_text('{"lora_r": 8,}')
    with pytest.raises(ConfigError, match="bad.json is not valid JSON"):
        read_mapping(tmp_path / "bad.json")
    (tmp_path / "bad.yaml").write_text("lora_r: [8\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML") as info:
        read_mapping(tmp_path / "bad.yaml")
    assert "\n" not in str(info.value)  # one line, as the CLI prints it
    (tmp_path / "list.yaml").write_text("- lora_r\n- 8\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_mapping(tmp_path / "list.yaml")


def test_an_empty_yaml_file_is_an_empty_mapping(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing set yet\n")
    assert read_mapping(tmp_path / "empty.yaml") == {}


def test_unique_keys_keeps_the_order_written():
    assert list(unique_keys([("b", 1), ("a", 2)])) == ["b", "a"]

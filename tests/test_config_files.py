"""Config files that are not what they should be: duplicate keys (named with their line),
non-UTF-8 bytes, a directory; each one ConfigError naming the file."""

import gzip

import pytest

from jaxalign.config import ConfigError, load_yaml, parse_override


def test_a_duplicate_key_is_refused_with_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optimizer:\n  lr: 1e-3\n  b1: 0.9\n  lr: 3e-4\nrun:\n  steps: 3\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(path)
    assert str(e.value) == (
        f"{path}:4: duplicate key 'lr' (first set on line 2); each key may appear once per mapping"
    )


def test_a_duplicate_top_level_section_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  steps: 3\nmodel:\n  hidden_size: 8\nrun:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:5: duplicate key 'run' \(first set on line 1"):
        load_yaml(path)


def test_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &b\n  lr: 1.0\n  b1: 0.5\nopt:\n  <<: *b\n  lr: 2.0\n")
    assert load_yaml(path)["opt"] == {"lr": 2.0, "b1": 0.5}


def test_a_duplicate_key_in_an_override_value_is_refused():
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_override("sharding.rules={a: 1, a: 2}")


def test_a_non_utf8_config_names_the_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"run:\n  out_dir: caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(path)
    assert str(e.value) == (
        f"{path}:2: not UTF-8 text: byte 0xe9 at column 15; a config must be a UTF-8 YAML file"
    )


def test_a_gzipped_config_says_so(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(gzip.compress(b"run:\n  steps: 3\n"))
    with pytest.raises(ConfigError, match=r"c.yaml:1: not UTF-8 text: .*\(it is gzip-compressed\)"):
        load_yaml(path)


def test_a_directory_given_as_config_says_so(tmp_path):
    (tmp_path / "dpo.yaml").write_text("run: {}\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(tmp_path)
    assert str(e.value) == (
        f"config {str(tmp_path)!r} is a directory; expected a YAML file; it holds e.g. dpo.yaml"
    )


def test_a_missing_config_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope.yaml' does not exist"):
        load_yaml(tmp_path / "nope.yaml")

"""Gin configuration: search path, parsing, and the operative config on disk."""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os

import gin
import tensorflow as tf

import configs

CONFIG_FILENAME = "config.gin"
OPERATIVE_CONFIG_FILENAME = "operative_config.gin"


class ConfigMismatchError(ValueError):
    """A model directory that was trained with a different configuration."""


class ConfigError(ValueError):
    """A configuration that cannot be parsed or lacks a required setting; the message names the file or binding."""


def resolve_config(name: str) -> str:
    """A config path: an existing file, or a name in the packaged `configs/`."""
    if tf.io.gfile.exists(name):
        return name if "://" in name else os.path.abspath(name)
    packaged = configs.CONFIG_DIR / name
    if packaged.exists():
        return str(packaged)
    available = sorted(p.name for p in configs.CONFIG_DIR.glob("*.gin"))
    raise FileNotFoundError(f"config {name!r} is neither a file nor one of the packaged configs {available}")


def parse(config_files: list[str], bindings: list[str]) -> str:
    """Parses configs (composed in order) then bindings (which win).

    Returns:
        The resulting config as gin text (`gin.config_str()`).

    Raises:
        FileNotFoundError: A config that is neither a file nor packaged.
        ConfigError: A config file or binding gin cannot parse, or one that
            names an unknown configurable or parameter (the message names it).
    """
    gin.clear_config()
    _add_packaged_search_path()
    files = [resolve_config(c) for c in config_files]
    with _search_path_misses_dropped():
        try:
            gin.parse_config_files_and_bindings(files, None, finalize_config=False)
        except (SyntaxError, ValueError) as error:
            raise ConfigError(f"config {', '.join(config_files)}: {_first_line(error)}") from error
        for binding in bindings:
            try:
                gin.parse_config(binding)
            except (SyntaxError, ValueError) as error:
                raise ConfigError(f"--gin_param={binding!r}: {_first_line(error)}") from error
    gin.finalize()
    return gin.config_str()


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def require(parameters: dict[str, str]):
    """Checks that the parsed config binds each parameter.

    Args:
        parameters: Each required gin parameter (`Experiment.model_name`) and
            how to give it.

    Raises:
        ConfigError: Naming the first unbound one and how to give it.
    """
    for parameter, how in parameters.items():
        try:
            value = gin.query_parameter(parameter)
        except ValueError:
            value = gin.REQUIRED
        if value is gin.REQUIRED or value is None:
            raise ConfigError(f"the configuration sets no {parameter}: {how}")


@functools.cache
def _add_packaged_search_path() -> None:
    """Makes packaged config names (and their includes) findable: once per process."""
    gin.add_config_file_search_path(str(configs.CONFIG_DIR))


class _SearchPathMiss(logging.Filter):
    """Drops gin's "Path not found" error for an include it goes on to find in another search path."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Path not found: ")


@contextlib.contextmanager
def _search_path_misses_dropped():
    """While parsing: gin tries each include relative to the working directory first, then under
    `configs/`, and its package-resource reader logs every miss at error level; a file it finds
    nowhere still fails the parse (`IOError` naming it and the paths searched)."""
    miss = _SearchPathMiss()
    root = logging.getLogger()
    root.addFilter(miss)
    try:
        yield
    finally:
        root.removeFilter(miss)


def check_or_save(model_dir: str, config_text: str, is_chief: bool = True):
    """Saves the config to a new model dir; refuses a dir made by another one.

    Raises:
        ConfigMismatchError: When `model_dir` holds a different `config.gin`.
    """
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as handle:
            saved = handle.read()
        if saved != config_text:
            diff = "\n".join(
                difflib.unified_diff(saved.splitlines(), config_text.splitlines(), "model_dir", "this run", lineterm="")
            )
            raise ConfigMismatchError(
                f"{model_dir} was trained with a different configuration; use a new --model_dir or the same "
                f"config.\n{diff}"
            )
        return
    if is_chief:
        tf.io.gfile.makedirs(model_dir)
        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(config_text)


def save_operative(model_dir: str) -> str:
    """Writes the operative config (what was actually used) and returns it."""
    text = gin.operative_config_str()
    with tf.io.gfile.GFile(os.path.join(model_dir, OPERATIVE_CONFIG_FILENAME), "w") as handle:
        handle.write(text)
    return text

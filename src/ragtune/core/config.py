"""One typed config per job, shared by the Python API, CLI flags and YAML files (litgpt-style).

Each job (fine-tune, serve, eval, run...) defines a subclass of :class:`Config`. The same class:
- validates keyword arguments from Python (``LoraConfig(learning_rate=1e-4)``),
- loads a YAML file (``Config.from_yaml(path, **overrides)``),
- generates CLI flags (``@config_options(Config)``: ``learning_rate`` -> ``--learning-rate``).
Unknown keys are errors that name the key, the closest valid key and all valid choices; wrong
types name the key, the value and the expected type.
"""
from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, source: str | None = None, /, **values: Any):
        """Validate ``values``; turn pydantic's errors into one :class:`ConfigError`."""
        return cls._build(source, values)

    @classmethod
    def _build(cls, source: str | None, values: dict[str, Any], from_flags: bool = False):
        try:
            return cls(**values)
        except ValidationError as exc:
            missing = [str(e["loc"][0]) for e in exc.errors() if e.get("type") == "missing" and len(e["loc"]) == 1]
            hint = None
            if from_flags and missing:   # a command's top-level keys are its flags (--evalset = evalset:)
                hint = "give " + ", ".join(f"--{k.replace('_', '-')}" for k in missing) + (
                    " (or the same key in the --config file)" if len(missing) == 1 else " (or the same keys in the --config file)")
            raise ConfigError(validation_message(cls, exc, source), hint=hint) from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, /, **overrides: Any):
        """Load ``path`` (YAML mapping), then apply non-None ``overrides`` (e.g. CLI flags)."""
        data = deep_merge(load_yaml_mapping(path), nest(overrides))
        return cls.build(str(path), **data)

    @classmethod
    def from_sources(cls, config: str | os.PathLike | None = None, /, **overrides: Any):
        """YAML file (optional) + overrides that are not None: how every CLI command builds its config."""
        if config:
            return cls._build(str(config), deep_merge(load_yaml_mapping(config), nest(overrides)), from_flags=True)
        return cls._build(None, nest(overrides), from_flags=True)

    # -- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | os.PathLike) -> Path:
        from .io import atomic_write_text

        return atomic_write_text(path, self.to_yaml())


def load_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML file, with errors that name the file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return dict(data)


# -- error messages ---------------------------------------------------------------------------
# Keys other tools (HF Trainer, LLaMA-Factory, FlagEmbedding) and older ragtune configs use for
# ragtune's one vocabulary: too far apart for difflib, so the hint comes from this table.
RENAMED_KEYS = {"base_model": "base", "model_name_or_path": "base", "output_dir": "output",
                "train_file": "train", "train_data": "train", "dataset": "train"}


def unknown_key_message(cls: type[Config], key: str, source: str | None = None) -> str:
    valid = sorted(cls.model_fields)
    renamed = RENAMED_KEYS.get(key)
    close = [renamed] if renamed in valid else difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    where = f" in {source}" if source else ""
    msg = f"unknown key '{key}'{where} for {cls.__name__}"
    if close:
        msg += f" (did you mean '{close[0]}'?)"
    return msg + ". Valid keys: " + ", ".join(valid)


def validation_message(cls: type[Config], exc: ValidationError, source: str | None = None) -> str:
    where = f" in {source}" if source else ""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(config)"
        if err.get("type") == "extra_forbidden":
            owner, prefix = _owner_of(cls, err["loc"][:-1])
            msg = unknown_key_message(owner, str(err["loc"][-1]), source)
            lines.append(msg.replace("unknown key '", f"unknown key '{prefix}", 1) if prefix else msg)
            continue
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):  # a validator's own message is already complete
            prefix = "" if loc == "(config)" or loc in cause.message else f"{loc}: "
            lines.append(prefix + cause.message + (f" ({source})" if source and source not in cause.message else ""))
            continue
        if err.get("type") == "missing":
            lines.append(f"missing required setting '{loc}'{where}")
            continue
        value = err.get("input")
        shown = repr(value) if not isinstance(value, Mapping) else "{...}"
        lines.append(f"invalid value for '{loc}'{where}: {shown}: {err.get('msg')}")
    return "; ".join(lines)


def _owner_of(cls: type[Config], loc: tuple) -> tuple[type[Config], str]:
    """The nested config class that ``loc`` points into (for YAML sections like ``llm.finetune``)."""
    owner, parts = cls, []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
            continue
        field = owner.model_fields.get(str(part)) if isinstance(owner, type) else None
        sub = _config_type(field.annotation) if field is not None else None
        if sub is None:
            break
        owner = sub
        parts.append(str(part))
    prefix = ".".join(parts).replace(".[", "[")
    return owner, (prefix + "." if prefix else "")


def _config_type(annotation: Any) -> type[Config] | None:
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return annotation
    for arg in typing.get_args(annotation):
        found = _config_type(arg)
        if found is not None:
            return found
    return None


# -- CLI flags from a config class --------------------------------------------------------------
def _click_type(annotation: Any):
    import click

    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _click_type(args[0])
    if annotation is bool:
        return bool
    # Everything else is passed through as a string and coerced by pydantic, so the error message
    # is the same whether the value came from a flag, YAML or Python.
    return str


NESTED_SEP = "__"   # click dest of a nested field: ``prompt__system`` -> {"prompt": {"system": ...}}


def flag_fields(cls: type[Config], exclude: tuple[str, ...] = (),
                extra: tuple[type[Config], ...] = ()) -> list[tuple[str, str, Any]]:
    """(flag name, click dest, pydantic field) for every CLI flag of ``cls``: its own fields, the
    fields of nested config sections flattened (``--system`` for ``prompt.system``; prefixed with
    the section name when that would clash: ``--prompt-template``), and the fields of ``extra``
    classes (e.g. every engine's settings, which the config's validator routes)."""
    own = [n for n in cls.model_fields if n not in exclude]
    rows: list[tuple[str, str, Any]] = []
    taken = set(own) | set(exclude)
    for name in own:
        field = cls.model_fields[name]
        sub = _config_type(field.annotation)
        if sub is not None and sub is not Config and sub.model_fields:
            for sub_name, sub_field in sub.model_fields.items():
                flag = sub_name if sub_name not in taken else f"{name}_{sub_name}"
                taken.add(flag)
                rows.append((flag, f"{name}{NESTED_SEP}{sub_name}", sub_field))
        elif sub is None:
            rows.append((name, name, field))
    for extra_cls in extra:
        for sub_name, sub_field in extra_cls.model_fields.items():
            if sub_name not in taken:
                taken.add(sub_name)
                rows.append((sub_name, sub_name, sub_field))
    return rows


def config_options(cls: type[Config], *, exclude: tuple[str, ...] = (), extra: tuple[type[Config], ...] = ()):
    """Decorator adding one ``--flag`` per config field (default None = "not given"); nested
    sections and ``extra`` classes as in :func:`flag_fields`. The command rebuilds the nested
    values with :func:`nest`."""
    import click

    def decorate(fn):
        for flag_name, dest, field in reversed(flag_fields(cls, exclude, extra)):
            flag = "--" + flag_name.replace("_", "-")
            ctype = _click_type(field.annotation)
            shows_default = (not field.is_required() and field.default is not None and field.default_factory is None
                             and not callable(field.default))
            help_text = (field.description or "") + (f" [default: {field.default}]" if shows_default else "")
            if ctype is bool:
                fn = click.option(f"{flag}/--no-{flag_name.replace('_', '-')}", dest, default=None,
                                  help=help_text)(fn)
            elif _bool_or_more(field.annotation):
                # `--resume` alone means true, `--resume auto` a value: a bare flag followed by another
                # flag no longer swallows that flag as its value
                fn = click.option(flag, dest, is_flag=False, flag_value="true", default=None,
                                  help=help_text + " (the flag alone: true)")(fn)
            elif _is_list(field.annotation):
                fn = click.option(flag, dest, default=None, help=help_text + " (comma-separated)",
                                  callback=_split_commas)(fn)
            else:
                fn = click.option(flag, dest, type=ctype, default=None, help=help_text,
                                  metavar=_number_metavar(field.annotation))(fn)
        return fn

    return decorate


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flag values (None = not given, dropped) with ``a__b`` dests turned into nested mappings."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        head, sep, tail = key.partition(NESTED_SEP)
        if sep:
            out.setdefault(head, {})[tail] = value
        else:
            out[key] = value
    return out


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, merging nested mappings key by key (flags over a YAML file)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _number_metavar(annotation: Any) -> str | None:
    """INTEGER / FLOAT in --help for numeric fields. The value itself still reaches pydantic as a
    string (one error message for flags, YAML and Python); only what --help says changes."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] \
        if typing.get_origin(annotation) is not None and typing.get_origin(annotation) is not typing.Literal \
        else [annotation]
    if not args or any(a not in (int, float) for a in args):
        return None
    return "INTEGER" if all(a is int for a in args) else "FLOAT"


def _bool_or_more(annotation: Any) -> bool:
    """A Union of bool and something else (``Union[bool, Literal["auto"]]``)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(annotation) is not typing.Literal and bool in args and len(args) > 1


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (list, tuple):
        return True
    return any(typing.get_origin(a) in (list, tuple) for a in typing.get_args(annotation))


def _split_commas(ctx, param, value):
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]

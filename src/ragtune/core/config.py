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
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, source: str | None = None, /, **values: Any):
        """Validate ``values``; turn pydantic's errors into one :class:`ConfigError`."""
        unknown = [k for k in values if k not in cls.model_fields]
        if unknown:
            raise ConfigError(unknown_key_message(cls, unknown[0], source))
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(validation_message(cls, exc, source)) from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, /, **overrides: Any):
        """Load ``path`` (YAML mapping), then apply non-None ``overrides`` (e.g. CLI flags)."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values, "
                              f"got {type(data).__name__}")
        data = dict(data)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.build(str(path), **data)

    @classmethod
    def from_sources(cls, config: str | os.PathLike | None = None, /, **overrides: Any):
        """YAML file (optional) + overrides that are not None: how every CLI command builds its config."""
        if config:
            return cls.from_yaml(config, **overrides)
        return cls.build(None, **{k: v for k, v in overrides.items() if v is not None})

    # -- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | os.PathLike) -> Path:
        from .io import atomic_write_text

        return atomic_write_text(path, self.to_yaml())


# -- error messages ---------------------------------------------------------------------------
def unknown_key_message(cls: type[Config], key: str, source: str | None = None) -> str:
    valid = sorted(cls.model_fields)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
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


def config_options(cls: type[Config], *, exclude: tuple[str, ...] = ()):
    """Decorator adding one ``--flag`` per config field (default None = "not given")."""
    import click

    def decorate(fn):
        for name, field in reversed(list(cls.model_fields.items())):
            if name in exclude:
                continue
            flag = "--" + name.replace("_", "-")
            ctype = _click_type(field.annotation)
            shows_default = not field.is_required() and field.default is not None and not callable(field.default)
            help_text = (field.description or "") + (f" [default: {field.default}]" if shows_default else "")
            if ctype is bool:
                fn = click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=None,
                                  help=help_text)(fn)
            elif _is_list(field.annotation):
                fn = click.option(flag, name, default=None, help=help_text + " (comma-separated)",
                                  callback=_split_commas)(fn)
            else:
                fn = click.option(flag, name, type=ctype, default=None, help=help_text)(fn)
        return fn

    return decorate


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (list, tuple):
        return True
    return any(typing.get_origin(a) in (list, tuple) for a in typing.get_args(annotation))


def _split_commas(ctx, param, value):
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]

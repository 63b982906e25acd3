"""A workflow module's RequestSchema made concrete for one ComfyUI, and its example input.

`narrow_model` rebuilds a RequestSchema (and every model nested in it) as a subclass whose
`ComfyChoice` fields (see `app.workflow_types`) are enums of the values ComfyUI reports, under a
name unique to the workflow, so each endpoint has its own schema in the OpenAPI document.
"""

from __future__ import annotations

import copy
import operator
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, WithJsonSchema, create_model
from pydantic.fields import FieldInfo

from app.comfy.catalog import Catalog
from app.comfy.model_inputs import is_model_url
from app.registry.fields import ComfyChoice

# Values for a choice: the list ComfyUI reports, or None where it cannot say (keep a plain str).
ChoiceValues = Callable[[ComfyChoice], list[str] | None]


class ExampleError(ValueError):
    """A schema has a required field with neither an example nor a value the gateway can pick."""


def enum_of(values: list[str]) -> Any:
    """A string type that allows exactly these values and documents them as an enum."""
    literal = Literal[tuple(values)]  # type: ignore[valid-type]
    return Annotated[literal, WithJsonSchema({"type": "string", "enum": list(values)})]


@dataclass(frozen=True)
class FileOrUrl:
    """A model field's values: one of these installed files, or a URL the gateway downloads the
    file from before the job runs. It validates (as an AfterValidator), and stays in the field's
    metadata so that others (the AUTOMATIC1111 facade) can read the files."""

    kind: str
    files: tuple[str, ...]

    def __call__(self, value: str) -> str:
        if value in self.files or is_model_url(value):
            return value
        shown = ", ".join(self.files[:20]) + (", ..." if len(self.files) > 20 else "")
        raise ValueError(
            f"{self.kind} {value!r} is not installed (installed: {shown}); or give an "
            "http(s):// or s3:// URL to download it from"
        )


def file_or_url(values: list[str], choice: ComfyChoice) -> Any:
    """The type of a model field: an installed file, or a URL to download one from."""
    marker = FileOrUrl(choice.kind, tuple(values))
    schema = {
        "anyOf": [
            {"type": "string", "enum": list(values)},
            {
                "type": "string",
                "format": "uri",
                "pattern": "^(https?|s3)://",
                "description": f"Where to download the {choice.kind} from (once; then cached)",
            },
        ]
    }
    return Annotated[str, AfterValidator(marker), WithJsonSchema(schema), marker]


def choice_of(info: FieldInfo) -> ComfyChoice | None:
    return next((m for m in info.metadata if isinstance(m, ComfyChoice)), None)


class Narrower:
    """Rebuilds models for one workflow; `prefix` makes the model names unique."""

    def __init__(
        self,
        prefix: str,
        values: ChoiceValues,
        defaults: dict[ComfyChoice, str] | None = None,
        *,
        urls: bool = False,
    ) -> None:
        self.prefix = prefix
        self.values = values
        self.defaults = defaults or {}
        self.urls = urls  # model fields take a URL too (MODEL_DOWNLOADS)
        self._done: dict[type[BaseModel], type[BaseModel]] = {}

    def model(self, cls: type[BaseModel], name: str | None = None) -> type[BaseModel]:
        """A subclass of cls with every choice narrowed, named `<prefix><name or cls name>`."""
        if cls in self._done:
            return self._done[cls]
        fields: dict[str, Any] = {}
        for field_name, info in cls.model_fields.items():
            choice = choice_of(info)
            if choice is not None:
                fields[field_name] = self._choice_field(info, choice)
            else:
                narrowed = self.type(info.annotation)
                if narrowed is not info.annotation:
                    fields[field_name] = (narrowed, info)
        # A misspelt field is a 400, not silently ignored, unless the module says otherwise.
        config = {} if "extra" in cls.model_config else {"extra": "forbid"}
        model: type[BaseModel] = create_model(
            f"{self.prefix}{name or cls.__name__}",
            __base__=cls,
            __doc__=cls.__doc__,
            __module__=cls.__module__,
            __cls_kwargs__=config,
            **fields,
        )
        self._done[cls] = model
        return model

    def _choice_field(self, info: FieldInfo, choice: ComfyChoice) -> tuple[Any, FieldInfo]:
        new = copy.copy(info)  # keeps the ComfyChoice in its metadata: pydantic ignores it
        if info.is_required() and choice in self.defaults:
            new.default = self.defaults[choice]
        return self.allowed(choice, str), new

    def allowed(self, choice: ComfyChoice, base: Any) -> Any:
        """The type of a choice's values: an enum, a model file or a URL, or base when ComfyUI
        reports nothing to choose from."""
        values = self.values(choice)
        if not values:
            return base
        if self.urls and choice.folder is not None:
            return file_or_url(values, choice)
        return enum_of(values)

    def type(self, tp: Any) -> Any:
        """tp with choices inside it narrowed and models rebuilt; tp itself if nothing changed."""
        origin = get_origin(tp)
        if origin is Annotated:
            base, *meta = get_args(tp)
            choice = next((m for m in meta if isinstance(m, ComfyChoice)), None)
            rest = [m for m in meta if not isinstance(m, ComfyChoice)]
            if choice is not None:
                inner = self.allowed(choice, base)
            else:
                inner = self.type(base)
                if inner is base:
                    return tp
            return Annotated[(inner, *rest)] if rest else inner
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return self.model(tp)
        args = get_args(tp)
        if not args or origin is Literal:
            return tp
        narrowed = tuple(self.type(a) for a in args)
        if all(n is a for n, a in zip(narrowed, args, strict=True)):
            return tp
        if origin is Union or origin is types.UnionType:
            return reduce(operator.or_, narrowed)
        return origin[narrowed]  # list[...], dict[...], tuple[...]


def example_input(schema: type[BaseModel], values: ChoiceValues) -> dict[str, Any]:
    """A minimal valid input: the schema's own example, else each required field's example.

    A required choice field without an example takes the first value ComfyUI reports.
    """
    extra = schema.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    first = examples[0] if isinstance(examples, list) and examples else None
    example: dict[str, Any] = dict(first) if isinstance(first, dict) else {}
    for name, info in schema.model_fields.items():
        key = info.alias or name
        if not info.is_required() or key in example:
            continue
        choice = choice_of(info)
        if info.examples:
            example[key] = info.examples[0]
        elif choice is not None and (found := values(choice)):
            example[key] = found[0]
        elif choice is not None:
            example[key] = stand_in(choice)
        else:
            raise ExampleError(
                f"field {name!r} is required but has no example: give it Field(examples=[...]) "
                "so that Swagger can show a runnable request and the gateway can check the graph"
            )
    return example


def stand_in(choice: ComfyChoice) -> str:
    """The example value of a required choice when ComfyUI has nothing to choose from."""
    return f"<no {choice.kind} installed>"


def schema_prefix(name: str) -> str:
    """`flux/schnell-txt2img` → `FluxSchnellTxt2img`: a model-name prefix for a workflow."""
    words = "".join(c if c.isalnum() else " " for c in name).split()
    return "".join(w[:1].upper() + w[1:] for w in words)


def choices(catalog: Catalog, choice: ComfyChoice) -> list[str] | None:
    """The values this ComfyUI allows for a choice, or None when it cannot say."""
    if choice.folder is not None:
        return catalog.folder_files(choice.folder)
    assert choice.node is not None and choice.input is not None
    return catalog.input_choices(choice.node, choice.input)

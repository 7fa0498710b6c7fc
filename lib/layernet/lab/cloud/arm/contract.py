"""What the lab's ARM accepts per resource type: the pinned api-version (`layernet.apiversions`) and, where a
pinned azure-mgmt-* package holds the type's models, bodies that fit them. The rules are read from the models
(generated from Azure's REST specifications), never written by hand:

- the fields of each model class (`rest_field` / `rest_discriminator` entries, their REST names and
  visibility), walked through base classes and, for a polymorphic model (`__mapping__`), the subclass its
  discriminator value names;
- a field whose type annotation is not Optional and that a request may set (visibility "create") is required;
- a field only the service sets (visibility ["read"]) is read-only;
- types from the annotations: str, int, float, bool, datetime, lists, dicts, nested models, enums (the value must
  be one of the enum's values, case-insensitive, as `CaseInsensitiveEnumMeta` reads them) and literals.

`check(resource_type, api_version, body)` returns ARM's answer for a refused request or None. ARM's resource
envelope (id, name, type, systemData) may be echoed back in a body, as ARM allows.
"""
from __future__ import annotations

import datetime
import enum
import importlib
import inspect
import sys
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

from layernet import apiversions

MODELS = {   # resource type -> (models module, the resource's model class): where the contract is read
    "Microsoft.Resources/resourceGroups": ("azure.mgmt.resource.resources.models", "ResourceGroup"),
    "Microsoft.Kubernetes/connectedClusters": ("azure.mgmt.hybridkubernetes.models", "ConnectedCluster"),
    "Microsoft.KubernetesConfiguration/extensions": ("azure.mgmt.kubernetesconfiguration.extensions.models", "Extension"),
    "Microsoft.IoTOperations/instances": ("azure.mgmt.iotoperations.models", "InstanceResource"),
    "Microsoft.IoTOperations/instances/brokers": ("azure.mgmt.iotoperations.models", "BrokerResource"),
    "Microsoft.IoTOperations/instances/brokers/listeners": ("azure.mgmt.iotoperations.models", "BrokerListenerResource"),
    "Microsoft.IoTOperations/instances/brokers/authentications": ("azure.mgmt.iotoperations.models",
                                                                  "BrokerAuthenticationResource"),
    "Microsoft.IoTOperations/instances/brokers/authorizations": ("azure.mgmt.iotoperations.models",
                                                                 "BrokerAuthorizationResource"),
    "Microsoft.IoTOperations/instances/dataflowProfiles": ("azure.mgmt.iotoperations.models", "DataflowProfileResource"),
    "Microsoft.IoTOperations/instances/dataflowProfiles/dataflows": ("azure.mgmt.iotoperations.models", "DataflowResource"),
    "Microsoft.IoTOperations/instances/dataflowEndpoints": ("azure.mgmt.iotoperations.models", "DataflowEndpointResource"),
    "Microsoft.IoTOperations/instances/registryEndpoints": ("azure.mgmt.iotoperations.models", "RegistryEndpointResource"),
    "Microsoft.DeviceRegistry/schemaRegistries": ("azure.mgmt.deviceregistry.models", "SchemaRegistry"),
    "Microsoft.DeviceRegistry/namespaces": ("azure.mgmt.deviceregistry.models", "Namespace"),
    "Microsoft.DeviceRegistry/namespaces/devices": ("azure.mgmt.deviceregistry.models", "NamespaceDevice"),
    "Microsoft.DeviceRegistry/namespaces/assets": ("azure.mgmt.deviceregistry.models", "NamespaceAsset"),
}
ENVELOPE = ("id", "name", "type", "systemData")
_LOWER = {k.lower(): v for k, v in MODELS.items()}


@dataclass(frozen=True)
class Field:
    name: str                 # REST name
    annotation: Any
    required: bool
    read_only: bool
    discriminator: bool = False


@dataclass(frozen=True)
class Problem:
    code: str                 # UnknownProperty | ReadOnlyProperty | MissingRequiredProperty | InvalidPropertyType | InvalidEnumValue
    target: str               # the property path, e.g. properties.ports[0].port
    message: str


def model_for(resource_type: str):
    """The model class of a resource type, or None (no pinned package models it)."""
    spec = _LOWER.get(resource_type.lower())
    if not spec:
        return None
    return getattr(importlib.import_module(spec[0]), spec[1])


@lru_cache(maxsize=None)
def fields(cls) -> dict[str, Field]:
    """REST name -> Field of a model class, its base classes included."""
    pkg = sys.modules[cls.__module__.rsplit(".", 1)[0]]        # the models package (`_models` in annotations)
    out: dict[str, Field] = {}
    for klass in reversed(cls.__mro__):
        mod = sys.modules.get(klass.__module__)
        if mod is None or "model_base" in klass.__module__ or not klass.__module__.startswith("azure.mgmt."):
            continue
        hints = typing.get_type_hints(klass, globalns={**vars(mod), "_models": pkg})
        for attr, rf in klass.__dict__.items():
            if not hasattr(rf, "_visibility") or not hasattr(rf, "_rest_name_input"):
                continue
            vis = list(rf._visibility or [])
            ann = hints.get(attr, Any)
            optional = _is_optional(ann)
            read_only = bool(vis) and all(v == "read" for v in vis)
            out[rf._rest_name_input or attr] = Field(
                rf._rest_name_input or attr, _strip_optional(ann), required=not optional and not read_only and
                (not vis or "create" in vis), read_only=read_only,
                discriminator=type(rf).__name__ == "_RestField" and getattr(rf, "_is_discriminator", False))
    return out


def _is_optional(ann) -> bool:
    return typing.get_origin(ann) is typing.Union and type(None) in typing.get_args(ann)


def _strip_optional(ann):
    if typing.get_origin(ann) is typing.Union:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return args[0] if len(args) == 1 else typing.Union[tuple(args)]
    return ann


def _is_model(t) -> bool:
    return inspect.isclass(t) and any(b.__name__ == "Model" and "model_base" in b.__module__ for b in t.__mro__)


def _enum_of(ann) -> Optional[type]:
    for a in (typing.get_args(ann) if typing.get_origin(ann) is typing.Union else (ann,)):
        if inspect.isclass(a) and issubclass(a, enum.Enum):
            return a
    return None


def _discriminated(cls, value: dict):
    """The subclass a polymorphic model's discriminator value names (cls when not polymorphic)."""
    mapping = cls.__dict__.get("__mapping__")
    if not mapping:
        return cls, None
    disc = next((f for f in fields(cls).values() if f.discriminator), None)
    name = disc.name if disc else getattr(cls, "_discriminator", None)
    got = value.get(name) if name else None
    sub = mapping.get(got) if isinstance(got, str) else None
    return (sub or cls), (name, got, sorted(mapping)) if sub is None else None


def validate(value: Any, ann: Any, path: str, out: list[Problem]) -> None:
    """Append the problems of `value` against the annotation `ann` at `path`."""
    if value is None:
        return                                   # JSON null for an optional field
    origin = typing.get_origin(ann)
    enum_cls = _enum_of(ann)
    if enum_cls is not None:
        allowed = [e.value for e in enum_cls]
        if not isinstance(value, str):
            out.append(Problem("InvalidPropertyType", path, f"expected a string, one of {allowed}"))
        elif value.lower() not in {str(a).lower() for a in allowed}:
            out.append(Problem("InvalidEnumValue", path, f"'{value}' is not one of {allowed}"))
        return
    if origin is typing.Literal:
        if value not in typing.get_args(ann):
            out.append(Problem("InvalidEnumValue", path, f"'{value}' is not one of {list(typing.get_args(ann))}"))
        return
    if origin in (list, typing.List):
        if not isinstance(value, list):
            out.append(Problem("InvalidPropertyType", path, f"expected an array, got {type(value).__name__}"))
            return
        (item,) = typing.get_args(ann) or (Any,)
        for i, v in enumerate(value):
            validate(v, _strip_optional(item), f"{path}[{i}]", out)
        return
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            out.append(Problem("InvalidPropertyType", path, f"expected an object, got {type(value).__name__}"))
            return
        args = typing.get_args(ann)
        for k, v in value.items():
            validate(v, _strip_optional(args[1]) if len(args) == 2 else Any, f"{path}.{k}", out)
        return
    if origin is typing.Union:
        trials = []
        for a in typing.get_args(ann):
            got: list[Problem] = []
            validate(value, a, path, got)
            if not got:
                return
            trials.append(got)
        out.extend(min(trials, key=len))
        return
    if _is_model(ann):
        validate_model(value, ann, path, out)
        return
    expect = {str: (str,), bool: (bool,), int: (int,), float: (int, float), datetime.datetime: (str,)}.get(ann)
    if expect is None:
        return                                   # Any, or a type the models leave open
    if isinstance(value, bool) and bool not in expect:
        ok = False
    else:
        ok = isinstance(value, expect)
    if ok and ann is datetime.datetime:
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            ok = False
    if not ok:
        kind = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
                datetime.datetime: "a date-time string"}[ann]
        out.append(Problem("InvalidPropertyType", path, f"expected {kind}, got {json_kind(value)}"))


def json_kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def validate_model(value: Any, cls, path: str, out: list[Problem], envelope: bool = False) -> None:
    if not isinstance(value, dict):
        out.append(Problem("InvalidPropertyType", path or "(body)", f"expected an object, got {json_kind(value)}"))
        return
    cls, bad_disc = _discriminated(cls, value)
    if bad_disc:
        name, got, known = bad_disc
        where = f"{path}.{name}" if path else name
        if got is None:
            out.append(Problem("MissingRequiredProperty", where, f"required; one of {known}"))
        else:
            out.append(Problem("InvalidEnumValue", where, f"'{got}' is not one of {known}"))
    spec = fields(cls)
    for k, v in value.items():
        where = f"{path}.{k}" if path else k
        f = spec.get(k)
        if f is None:
            if not (envelope and k in ENVELOPE):
                out.append(Problem("UnknownProperty", where, f"'{k}' is not a property of {cls.__name__}"))
            continue
        if f.read_only:
            if not (envelope and k in ENVELOPE):
                out.append(Problem("ReadOnlyProperty", where, f"'{k}' is set by the service and cannot be sent"))
            continue
        if f.discriminator:
            continue
        validate(v, f.annotation, where, out)
    for f in spec.values():
        if f.required and f.name not in value:
            out.append(Problem("MissingRequiredProperty", f"{path}.{f.name}" if path else f.name,
                               f"'{f.name}' is required by {cls.__name__}"))


def problems(resource_type: str, body: Any) -> list[Problem]:
    """Every breach of the pinned model's contract by a PUT body ([] when it fits or no model is pinned)."""
    cls = model_for(resource_type)
    if cls is None:
        return []
    out: list[Problem] = []
    validate_model(body, cls, "", out, envelope=True)
    return out


def version_error(resource_type: str, api_version: str) -> Optional[dict]:
    """ARM's answer body for an api-version the type does not have (None when it has it or is not pinned): the
    pinned version and the versions the pinned clients send (`apiversions.served`)."""
    versions = apiversions.served(resource_type)
    if not versions or api_version in versions:
        return None
    ns, _, rtype = resource_type.partition("/")
    return {"error": {"code": "InvalidApiVersionParameter",
                      "message": f"The api-version '{api_version}' is invalid. The supported versions for resource "
                                 f"type '{rtype}' of provider '{ns}' are '{','.join(versions)}'."}}


def body_error(resource_type: str, body: Any) -> Optional[dict]:
    """ARM's 400 answer body for a PUT body that breaks the model's contract (None when it fits)."""
    found = problems(resource_type, body)
    if not found:
        return None
    first = found[0]
    return {"error": {"code": "InvalidRequestContent",
                      "message": f"The request content was invalid: {first.target}: {first.message}"
                                 + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""),
                      "target": first.target,
                      "details": [{"code": p.code, "target": p.target, "message": p.message} for p in found]}}

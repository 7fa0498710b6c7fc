"""A pod's volumes on the lab's node, and how its containers see them at their mount paths.

A container here is a process on this machine, not in a mount namespace: a volume is a folder of the pod
(`mount_folders`), and every path a container would read under one of its pod's mountPaths is rewritten to that
folder: in its arguments (`images.command`) and in the text of the files written into the volumes (`rewrite`),
so K3s's Corefile (`hosts /etc/coredns/NodeHosts`, `import /etc/coredns/custom/*.server`) reads the pod's files.

ConfigMap and Secret volumes are what a kubelet makes of them (`volume_files`): every key as a file, or with
`items` only the listed keys under their paths; an absent object (or listed key) is an error naming it, unless the
volume is `optional: true`, then an empty folder (or the key left out). emptyDir and the rest start empty.
While a pod runs its ConfigMap and Secret volumes follow their objects (`refreshed`, `write`), except under a
subPath, as with a kubelet.
"""
from __future__ import annotations

import base64
import os
import re
from pathlib import Path, PurePosixPath
from typing import Optional

# what may follow a mount path for it to be one (a path boundary): a separator, white space, a quote, the end
_AFTER = r"(?=[/\s'\"]|\Z)"
# what may not come before it (else it is the middle of another path or word)
_BEFORE = r"(?<![\w./-])"


class VolumeError(Exception):
    """A volume the node cannot make (the kubelet's CreateContainerConfigError / FailedMount)."""


def mount_folders(spec: dict, folder: Path) -> dict[str, Path]:
    """mountPath -> where it is on this machine, for every container's volumeMounts of a pod spec (the first
    container to mount a path decides; a subPath mount is that path inside its volume's folder)."""
    out: dict[str, Path] = {}
    for c in spec.get("containers") or []:
        for m in c.get("volumeMounts") or []:
            target = folder / m["name"]
            if m.get("subPath"):
                target = target / _relative(m["subPath"], f"volumeMount {m['name']!r} subPath")
            out.setdefault(m["mountPath"], target)
    return out


def source(volume: dict) -> Optional[tuple[str, str, bool]]:
    """("configmaps" | "secrets", object name, optional) of a volume backed by an API object; None for the rest."""
    if "configMap" in volume:
        cm = volume["configMap"]
        return "configmaps", cm.get("name", ""), bool(cm.get("optional"))
    if "secret" in volume:
        sec = volume["secret"]
        return "secrets", sec.get("secretName", ""), bool(sec.get("optional"))
    return None


def volume_files(volume: dict, obj: Optional[dict]) -> dict[str, bytes]:
    """The files (relative path -> content) of a ConfigMap or Secret volume, given its object (None: absent)."""
    src = source(volume)
    if src is None:
        return {}
    plural, name, optional = src
    kind = plural[:-1]
    if obj is None:
        if optional:
            return {}
        raise VolumeError(f'{kind} "{name}" not found (volume "{volume.get("name")}")')
    data: dict[str, bytes] = {}
    if plural == "configmaps":
        data.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    else:
        data.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
    items = (volume.get("configMap") or volume.get("secret") or {}).get("items")
    if not items:
        return {_relative(k, f"{kind} {name!r} key"): v for k, v in data.items()}
    out: dict[str, bytes] = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise VolumeError(f'{kind} "{name}" references non-existent {"config" if kind == "configmap" else kind} '
                              f'key: {key} (volume "{volume.get("name")}")')
        out[_relative(item.get("path") or key, f"{kind} {name!r} item {key!r} path")] = data[key]
    return out


def _relative(path: str, what: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts:
        raise VolumeError(f"{what} {path[:80]!r} must be a relative path without '..'")
    return str(p)


def rewrite(text: str, mounts: dict[str, Path]) -> str:
    """`text` with every mount path (longest first, only where a path ends: before '/', white space, a quote or
    the end) replaced by its folder here."""
    paths = {m.rstrip("/") or "/": str(f) for m, f in mounts.items()}
    paths = {m: f for m, f in paths.items() if m != "/"}
    if not paths:
        return text
    pattern = re.compile(_BEFORE + "(" + "|".join(re.escape(m) for m in sorted(paths, key=len, reverse=True))
                         + ")" + _AFTER)
    return pattern.sub(lambda hit: paths[hit.group(1)], text)


def write(folder: Path, files: dict[str, bytes], mounts: dict[str, Path]) -> bool:
    """Write a volume's files into its folder, text rewritten so its paths point at the pod's folders. Used again
    to refresh a running pod's volume: only what differs is written, each file replaced whole (a reader never sees
    half a file), and files whose keys went are removed. Returns whether anything changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed, wanted = False, set()
    for rel, content in files.items():
        path = folder / rel
        wanted.add(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            content = rewrite(content.decode(), mounts).encode()
        except UnicodeDecodeError:
            pass                                   # binary data stays as it is
        if path.is_file() and path.read_bytes() == content:
            continue
        tmp = path.with_name(f".{path.name}.new")
        tmp.write_bytes(content)
        os.replace(tmp, path)
        changed = True
    for gone in [f for f in folder.rglob("*") if f.is_file() and f not in wanted]:
        gone.unlink()
        changed = True
    return changed


def refreshed(spec: dict) -> list[dict]:
    """The volumes of a pod spec the kubelet keeps up to date while the pod runs: ConfigMap and Secret volumes that
    no container mounts with a subPath (a subPath mount keeps what it got at start)."""
    pinned = {m["name"] for c in spec.get("containers") or [] for m in c.get("volumeMounts") or [] if m.get("subPath")}
    return [v for v in spec.get("volumes") or [] if source(v) is not None and v.get("name") not in pinned]

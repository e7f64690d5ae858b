"""Generate into memory, then write: a BuildPlan maps relative paths to file contents.

Templates own structure, Python supplies values (Jinja2 with StrictUndefined).
Writing is atomic at the directory level: the plan goes to a temporary sibling
directory which replaces the target only once it is complete, so a failed or
interrupted write leaves the previous good project untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import jinja2

from .errors import FlowError
from .resources import templates_dir

TEMPLATES = templates_dir()

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True, autoescape=False)


def render(template: str, **values) -> str:
    return _env.get_template(template).render(**values)


class BuildPlan(dict):
    """``{relative path: bytes}``; the digest keys caches and proves reproducibility."""

    def add(self, path: str, content: str | bytes) -> None:
        p = Path(path)
        if p.is_absolute() or ".." in p.parts:
            raise FlowError(f"build plan path {path!r} must be relative and inside the project")
        self[str(p)] = content.encode() if isinstance(content, str) else bytes(content)

    @classmethod
    def from_dir(cls, root: Path, skip: tuple[str, ...] = ()) -> "BuildPlan":
        plan = cls()
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and not any(rel == s or rel.startswith(s + "/") for s in skip):
                plan.add(rel, p.read_bytes())
        return plan

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self):
            h.update(path.encode() + b"\0" + hashlib.sha256(self[path]).digest())
        return h.hexdigest()

    def write(self, target: Path) -> Path:
        """Write to a temporary sibling, then swap it into place."""
        target = Path(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        except OSError as e:
            raise FlowError(f"cannot write to {target.parent}: {e.strerror or e}") from e
        try:
            for rel, content in self.items():
                p = staging / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(content)
                if rel.endswith(".sh"):
                    p.chmod(0o755)
            replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target


def replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; the old ``target`` is removed only after the swap."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_plan_info(p: Path, model: str) -> dict:
    """plan_info.json as the write step left it, or one FlowError naming the file (#15 item 10: a bad one
    was a JSONDecodeError / KeyError traceback)."""
    again = f"rebuild the project with `make hls MODEL={model}`"
    try:
        info = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FlowError(f"{p} cannot be read as JSON ({str(e).splitlines()[0][:100]}): {again}") from e
    if not isinstance(info, dict):
        raise FlowError(f"{p} is not a JSON object: {again}")
    digest = info.get("digest")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise FlowError(f"{p} has no valid 'digest' (a sha256 in hex): {again}")
    layers = info.get("layers")
    if layers is not None and not (isinstance(layers, list) and all(isinstance(r, dict) for r in layers)):
        raise FlowError(f"{p}: 'layers' is not a list of objects: {again}")
    return info

"""Stage kernels: the kernel manager papermill starts each stage's kernel with, and the next stage's kernel started
while the current stage runs (`Ahead`)."""
from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Optional

from jupyter_client.manager import AsyncKernelManager
from traitlets import default

START_TIMEOUT = 60.0
WARM_TIMEOUT = 120.0


class LocalKernelManager(AsyncKernelManager):
    """Kernels talk to the runner over Unix sockets (IPC), not loopback TCP: no port is opened, and nothing
    another local user could connect to or read. Each kernel's sockets live in a private folder of their own
    (mode 0700), so two runs at once never bind the same socket path (jupyter's default, `kernel-ipc-N` in the
    working folder, is shared by every kernel started there)."""

    transport = "ipc"

    @default("ip")
    def _private_ipc_path(self) -> str:
        self._ipc_dir = tempfile.mkdtemp(prefix="layernet-kernel-")
        return os.path.join(self._ipc_dir, "kernel")

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart and getattr(self, "_ipc_dir", None):
            shutil.rmtree(self._ipc_dir, ignore_errors=True)


def import_lines(notebook: Path) -> str:
    """The notebook's own top-level import statements, in order (a cell that is not plain Python is left out)."""
    try:
        cells = json.loads(Path(notebook).read_text())["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    out = []
    for c in cells:
        if not isinstance(c, dict) or c.get("cell_type") != "code":
            continue
        src = c.get("source") or ""
        src = "".join(src) if isinstance(src, list) else str(src)
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError):
            continue
        out += [ast.get_source_segment(src, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return "\n".join(dict.fromkeys(s for s in out if s))


class Ahead:
    """The kernel of a stage that runs next, started in the background (in the notebook's folder) with the
    notebook's imports already run, so the stage starts at its first cell instead of waiting for a Python start and
    its imports. `take()` hands the kernel manager to papermill (None when the start failed: papermill then starts
    one itself); `release()` shuts it down in the background once the stage is done; `close()` shuts down a kernel
    nobody took and waits for a released one."""

    def __init__(self, notebook: Path, kernel_name: str = "python3"):
        self.notebook = Path(notebook)
        self.km: Optional[LocalKernelManager] = None
        self.error: Optional[str] = None
        self._taken: Optional[LocalKernelManager] = None
        self._stopping: Optional[threading.Thread] = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._start(kernel_name)), daemon=True,
                                        name=f"kernel-ahead-{self.notebook.stem}")
        self._thread.start()

    async def _start(self, kernel_name: str) -> None:
        km = LocalKernelManager(kernel_name=kernel_name)
        try:
            await km.start_kernel(cwd=str(self.notebook.parent))
            self.km = km
            kc = km.client()
            kc.start_channels()
            try:
                await kc.wait_for_ready(timeout=START_TIMEOUT)
                code = import_lines(self.notebook)
                if code:        # silent: no output, no execution count; an import error shows again in its cell
                    await kc.execute_interactive(code, silent=True, store_history=False, timeout=WARM_TIMEOUT)
            finally:
                kc.stop_channels()
        except Exception as exc:  # noqa: BLE001 - the stage then starts its own kernel
            self.error = f"{type(exc).__name__}: {exc}"

    def take(self) -> Optional[LocalKernelManager]:
        """The started kernel's manager (waits for the start), or None when its start failed."""
        self._thread.join(START_TIMEOUT + WARM_TIMEOUT)
        km, self.km = self.km, None
        if km is not None and self.error is not None:
            _stop(km)
            return None
        self._taken = km
        return km

    def release(self) -> None:
        """The stage is done with the kernel: it shuts down in the background (close() waits for that)."""
        km, self._taken = self._taken, None
        if km is not None:
            self._stopping = threading.Thread(target=_stop, args=(km,), daemon=True)
            self._stopping.start()

    def close(self) -> None:
        """Shut down a kernel nobody took, and wait for one released to be gone."""
        if self._thread.is_alive() or self.km is not None:
            km = self.take()
            if km is not None:
                self._taken = None
                _stop(km)
        self.release()
        if self._stopping is not None:
            self._stopping.join(30)


def _stop(km: AsyncKernelManager) -> None:
    """Shut down a kernel (asking it first, as papermill does with its own) and free its sockets."""
    try:
        asyncio.run(km.shutdown_kernel())
    except Exception:  # noqa: BLE001 - a kernel that is already gone
        pass

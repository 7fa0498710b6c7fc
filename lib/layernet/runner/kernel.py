"""The kernel manager papermill starts each stage's kernel with (named by string in layernet.runner.execute)."""
from __future__ import annotations

import os
import shutil
import tempfile

from jupyter_client.manager import AsyncKernelManager
from traitlets import default


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

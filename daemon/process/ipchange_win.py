"""Windows' network change notice: ``NotifyIpInterfaceChange`` (iphlpapi), whose callback
runs on a thread of the system's pool and is handed to the event loop.

Only type-checked here (``mypy --platform win32``); the tests run it with the DLL
injected.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["IpInterfaceChanges"]

_AF_UNSPEC = 0


class IpInterfaceChanges:
    """Calls ``notice(["address"])`` whenever an interface's IP settings change.
    ``iphlpapi`` and ``callback_type`` are injected by tests."""

    name = "NotifyIpInterfaceChange"

    def __init__(self, iphlpapi: Any = None, callback_type: Any = None) -> None:
        self._dll = iphlpapi
        self._callback_type = callback_type
        self._handle = ctypes.c_void_p()
        self._callback: Any = None  # kept alive while registered: Windows holds a pointer

    def _load(self) -> tuple[Any, Any]:
        if self._dll is not None:
            return self._dll, self._callback_type or ctypes.CFUNCTYPE
        if sys.platform == "win32":
            return ctypes.WinDLL("iphlpapi"), ctypes.WINFUNCTYPE
        raise OSError(f"NotifyIpInterfaceChange is Windows' ({sys.platform})")

    def start(self, notice: Callable[[list[str]], None]) -> None:
        dll, functype = self._load()
        loop = asyncio.get_running_loop()
        # VOID callback(PVOID context, PMIB_IPINTERFACE_ROW row, MIB_NOTIFICATION_TYPE type)
        prototype = functype(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)

        def changed(_context: Any, _row: Any, _kind: int) -> None:
            loop.call_soon_threadsafe(notice, ["address"])

        self._callback = prototype(changed)
        status = dll.NotifyIpInterfaceChange(
            _AF_UNSPEC, self._callback, None, False, ctypes.byref(self._handle)
        )
        if status != 0:
            self._callback = None
            raise OSError(f"NotifyIpInterfaceChange failed with status {status}")

    def stop(self) -> None:
        if self._callback is not None:
            dll, _ = self._load()
            dll.CancelMibChangeNotify2(self._handle)
            self._callback = None

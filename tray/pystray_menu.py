"""The thin adapter from the menu model (:mod:`jobtunnel.tray.menu`) to ``pystray.Menu``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pystray

from .menu import Action, Item

__all__ = ["to_pystray"]


def _item(item: Item, dispatch: Callable[[Action], None]) -> Any:
    if item.separator:
        return pystray.Menu.SEPARATOR
    if item.children:
        return pystray.MenuItem(
            item.text, pystray.Menu(*(_item(c, dispatch) for c in item.children))
        )
    action = item.action

    def clicked(_icon: Any, _item: Any) -> None:
        if action is not None:
            dispatch(action)

    checked = item.checked
    return pystray.MenuItem(
        item.text,
        clicked,
        checked=None if checked is None else (lambda _i: checked),
        enabled=item.enabled and action is not None,
    )


def to_pystray(items: Sequence[Item], dispatch: Callable[[Action], None]) -> Any:
    """A ``pystray.Menu`` whose clicks call ``dispatch(action)``."""
    return pystray.Menu(*(_item(i, dispatch) for i in items))

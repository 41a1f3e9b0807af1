"""Permission classes named in DEFAULT_PERMISSION_CLASSES by a subprocess test.

This module must not import ``rest_framework.views``: DRF imports it while
``rest_framework.views`` itself is being imported.
"""

from __future__ import annotations

from keyrunes_django.drf import permissions as kp

#: The call form, given a dotted path by a module-level name.
EditorsByCall = kp.HasGroup("editors")


class Editors(kp.HasGroup):
    """The subclass form."""

    groups = ("editors",)


#: A composition (an OperandHolder): DRF instantiates it like a class.
EditorsOrAdmin = kp.HasGroup("editors") | kp.IsKeyrunesAdmin

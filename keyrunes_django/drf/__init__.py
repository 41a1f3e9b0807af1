"""Django REST Framework integration (needs the ``drf`` extra: ``djangorestframework``)."""

from __future__ import annotations

try:
    import rest_framework  # noqa: F401
except ImportError:
    # One clear line instead of a traceback ending deep inside our modules.
    raise ImportError(
        'keyrunes_django.drf needs Django REST Framework: pip install "keyrunes-django[drf]"'
    ) from None

"""Models for the test suite.

``EmailUser`` is the custom user model (``USERNAME_FIELD = "email"``) of the
dedicated run in ``tests/custom_user`` (settings ``tests.settings_email_user``).
Its many-to-many fields get their own related names so it can coexist with
``auth.User`` when the default settings are active.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import Group, Permission, PermissionsMixin
from django.db import models


class EmailUserManager(BaseUserManager["EmailUser"]):
    def create_user(self, email: str, password: str | None = None, **extra: Any) -> EmailUser:
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> EmailUser:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class EmailUser(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    groups = models.ManyToManyField(  # type: ignore[assignment]
        Group, blank=True, related_name="email_users"
    )
    user_permissions = models.ManyToManyField(  # type: ignore[assignment]
        Permission, blank=True, related_name="email_users"
    )

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects = EmailUserManager()

    def __str__(self) -> str:
        return self.email

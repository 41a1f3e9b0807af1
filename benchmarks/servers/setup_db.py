"""Prepare the bench database: migrate, create the simplejwt and OIDC users, print their tokens.

Run with the bench project's environment; prints one JSON object
``{"simplejwt": [...], "oidc_users": N}`` on stdout.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")


def main() -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework_simplejwt.tokens import AccessToken

    users = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    call_command("flush", interactive=False, verbosity=0)
    call_command("migrate", verbosity=0)
    User = get_user_model()
    User.objects.bulk_create(
        [User(username=f"jwt{i}", email=f"jwt{i}@bench.test") for i in range(users)]
        + [User(username=f"oidc{i}", email=f"oidc{i}@bench.test") for i in range(users)]
    )
    jwt_users = User.objects.filter(username__startswith="jwt").order_by("pk")
    tokens = [str(AccessToken.for_user(user)) for user in jwt_users]
    print(json.dumps({"simplejwt": tokens, "oidc_users": users}))


if __name__ == "__main__":
    main()

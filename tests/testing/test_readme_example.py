"""The README's example test, kept here verbatim so it keeps running."""

import pytest
from django.contrib.auth import authenticate

from keyrunes_django.client import get_client
from keyrunes_django.exceptions import KeyrunesUnavailable


@pytest.mark.django_db
def test_login_mirrors_the_keyrunes_user(keyrunes, keyrunes_user):
    user = authenticate(username=keyrunes_user.username, password=keyrunes_user.password)
    assert user is not None
    assert user.username == keyrunes_user.username
    assert keyrunes.requests_to("/api/login", method="POST") == 1


def test_policies_and_outages(keyrunes):
    alice = keyrunes.create_user("alice", groups=("users",))
    keyrunes.create_group("editors")
    keyrunes.create_policy("edit_docs", "docs:*", "write")
    keyrunes.attach_policy("edit_docs", group="editors")
    keyrunes.add_to_group(alice, "editors")
    client = get_client()  # settings.KEYRUNES points at the emulator
    assert client.check_permission(alice.user_id, "docs:42", "write").allowed

    keyrunes.faults.fail_next(1, status=503)
    with pytest.raises(KeyrunesUnavailable):
        client.check_permission(alice.user_id, "docs:42", "write")

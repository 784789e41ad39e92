"""Settings for `make bench` only: the project's settings, plus the bench's own URLs (the naive
peer and the transaction-per-action variant of push, bench/peers.py). Never used by the app or the tests."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"

# The bench seeds the demo users (six password hashes) on every run; PBKDF2's production cost
# only adds seconds. Device tokens are sha256 either way, so no measured request changes.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Admin pages name static files; the manifest storage would need `collectstatic` first.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

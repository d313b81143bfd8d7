"""The app's settings, for the test process: static files come from the source folders, as
the test server serves them, instead of a collected manifest (test_static checks that storage).

Set here rather than by each test: a live-server thread still answering a page of the test
before (a long poll) would otherwise see the production storage between two tests, and could
leave it in place for the next."""

from sam3web.settings import *  # noqa: F403
from sam3web.settings import STORAGES

STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

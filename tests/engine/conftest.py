from tests.tools.conftest import toy_root  # noqa: F401  (the small toy datasets fixture)

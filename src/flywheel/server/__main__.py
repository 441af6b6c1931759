"""``python -m flywheel.server``: print the OpenAPI document (``docs/openapi.json``)."""

from flywheel.server.app import openapi_document

print(openapi_document(), end="")

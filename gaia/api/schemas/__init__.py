"""The API's request and response models (pydantic), one module per resource.

``base`` holds what every resource shares (``Strict`` bodies that refuse unknown fields, name
patterns, bounded text, ``ResourceAmounts``, ``Page``, ``ErrorOut``); the other modules hold one
resource's bodies each. Models are shaped for the wire, never the ORM: routes build them from
store rows. Class names are the OpenAPI component names clients are generated from, so a rename
is an API change (``tests/api/test_openapi.py``). See docs/architecture.md.
"""

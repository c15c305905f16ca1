"""Request and response bodies of the HTTP API (pydantic), which are also its OpenAPI documentation.

One module per resource; `errors` holds the one error shape every route documents.
"""

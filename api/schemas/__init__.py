"""Request (``*Create``) and response (``*Read``) bodies, one module per resource (msgspec
Structs); :mod:`api.schemas.common` holds the types they share."""

"""The routers of the service, one module per concern; :func:`rsitr.api.app.create_app` includes each."""

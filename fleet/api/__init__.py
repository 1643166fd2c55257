"""The fleet's REST API (FastAPI): create_app(ApiSettings(engine, broker_url))."""

from fleet.api.app import API_PREFIX, PUBLIC_ROUTES, api_routes, create_app
from fleet.api.deps import ApiSettings

__all__ = ["API_PREFIX", "PUBLIC_ROUTES", "ApiSettings", "api_routes", "create_app"]

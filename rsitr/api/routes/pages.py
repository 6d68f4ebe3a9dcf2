"""The search page, the API's description (Swagger UI, vendored: nothing is fetched from outside) and the index
summary the page reads first."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from rsitr.api.deps import MAX_RESULTS, ServiceDep
from rsitr.api.middleware import inline_script_policy
from rsitr.api.schemas import Info

STATIC_DIR = Path(__file__).parents[1] / "static"
SWAGGER_UI = "/static/vendor/swagger-ui"

router = APIRouter()


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    app = request.app
    page = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title}: API",
                               swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
                               swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
                               swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
                               swagger_ui_parameters={"validatorUrl": None})  # the validator is online
    page.headers["Content-Security-Policy"] = inline_script_policy(page)
    return page


@router.get("/api/info")
def info(service: ServiceDep) -> Info:
    return Info(**service.index.info(), max_upload_bytes=service.max_upload_bytes, max_pixels=service.max_pixels,
                max_results=MAX_RESULTS, basemap=service.basemap)

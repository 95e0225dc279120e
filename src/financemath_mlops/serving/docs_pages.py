"""``/docs`` (Swagger UI) and ``/redoc`` with every asset served by the service itself.

FastAPI's built-in pages load Swagger UI and ReDoc from a public CDN, their icon from FastAPI's
site and ReDoc's fonts from Google: on an air-gapped host (our promise) they render blank. The
assets here come from the ``fastapi-offline`` wheel (swagger-ui-dist, Apache-2.0, and ReDoc's
standalone bundle, MIT), a dependency of the ``serving`` extra, so the inference image has them.
This module is the one place that knows where they live; the app turns FastAPI's own pages off
(``docs_url=None, redoc_url=None``) and includes :data:`router`. The OpenAPI description itself
is untouched: the pages load the app's ``openapi_url``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS_PATH = "/docs-assets"
# The only files served: a fixed name -> media type map, so the path parameter never reaches
# the file system (no traversal) and metrics see one route template.
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
# Swagger UI's online validator badge fetches an image from swagger.io for non-local hosts; our
# BaseLayout does not show it today, and this keeps it off should the layout change.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
# ReDoc's bundle hard-codes the "API docs by Redocly" logo from cdn.redoc.ly in its side menu (no
# option turns it off). This policy stops the browser asking any other host for an image, so the
# page never reaches outside, and the image hides itself when it cannot load.
PAGE_HEADERS = {"Content-Security-Policy": "img-src 'self' data: blob:"}

# Where the installed fastapi-offline keeps them (a plain directory in its wheel). Resolved at
# import, so an image without the package fails its import check instead of 500s on /docs.
ASSETS_DIR = Path(str(resources.files("fastapi_offline").joinpath("static")))

router = APIRouter(include_in_schema=False)


def _offline_page(
    request: Request,
    name: str,
    build: Callable[..., HTMLResponse],
    assets: dict[str, str],
    **options: Any,
) -> HTMLResponse:
    """FastAPI's page `build` with the OpenAPI URL and every asset URL (`assets`: keyword ->
    file name) under this service, honouring a proxy's ``root_path``, and the image policy."""
    root = request.scope.get("root_path", "").rstrip("/")
    openapi_url = request.app.openapi_url or "/openapi.json"
    page = build(
        openapi_url=f"{root}{openapi_url}",
        title=f"{request.app.title} - {name}",
        **{keyword: f"{root}{ASSETS_PATH}/{file}" for keyword, file in assets.items()},
        **options,
    )
    page.headers.update(PAGE_HEADERS)
    return page


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    files = {"swagger_js_url": "swagger-ui-bundle.js", "swagger_css_url": "swagger-ui.css",
             "swagger_favicon_url": "favicon.png"}  # fmt: skip
    return _offline_page(request, "Swagger UI", get_swagger_ui_html, files,
                         swagger_ui_parameters=SWAGGER_UI_PARAMETERS)  # fmt: skip


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    files = {"redoc_js_url": "redoc.standalone.js", "redoc_favicon_url": "favicon.png"}
    return _offline_page(request, "ReDoc", get_redoc_html, files, with_google_fonts=False)


@router.get(ASSETS_PATH + "/{name}")
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404)
    return FileResponse(
        ASSETS_DIR / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )

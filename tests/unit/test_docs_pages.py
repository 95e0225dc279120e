"""/docs and /redoc name only the service's own URLs, and the service serves those assets.

Whether the pages then render, and that the browser asks nothing of another host, is checked in a
real Chromium by tests/browser/test_pages_offline.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from financemath_mlops.config import load_settings
from financemath_mlops.serving.app import ServiceSettings, create_app
from financemath_mlops.serving.docs_pages import ASSETS, ASSETS_DIR

URL_ATTRIBUTE = re.compile(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("docs-pages")
    settings = load_settings(
        overrides={
            "mlflow": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
            "serving": {"model_uri": "nowhere:/model"},
        }
    )
    with TestClient(
        create_app(ServiceSettings.of(settings)), raise_server_exceptions=False
    ) as test_client:
        yield test_client


def test_the_installed_package_ships_every_asset_the_pages_name():
    for name in ASSETS:
        assert (ASSETS_DIR / name).stat().st_size > 1000, name


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_reference_only_urls_of_this_service(client, page):
    response = client.get(page)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    urls = URL_ATTRIBUTE.findall(response.text)
    assert urls, response.text[:500]
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from outside the service"
        if url.startswith("/docs-assets/"):
            assert client.get(url).status_code == 200, url
    assert "fonts.googleapis" not in response.text and "cdn.jsdelivr" not in response.text


def test_swagger_ui_loads_the_apps_own_openapi_and_no_online_validator(client):
    html = client.get("/docs").text
    assert "'/openapi.json'" in html or '"/openapi.json"' in html
    assert '"validatorUrl": null' in html


def test_assets_come_with_their_media_type_and_a_cache_header(client):
    response = client.get("/docs-assets/swagger-ui-bundle.js")
    assert response.headers["content-type"].startswith("text/javascript")
    assert "max-age" in response.headers["cache-control"]
    assert response.content == (ASSETS_DIR / "swagger-ui-bundle.js").read_bytes()
    assert client.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("name", ["nope.js", "..%2F__init__.py", "%2E%2E%2Fcore.py"])
def test_an_unknown_asset_is_a_404_in_the_error_shape(client, name):
    response = client.get(f"/docs-assets/{name}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_docs_routes_stay_out_of_the_openapi_description(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
    assert "/predict" in paths


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_forbid_images_from_other_hosts(client, page):
    # ReDoc's bundle hard-codes a logo from cdn.redoc.ly: the policy keeps the browser from asking.
    policy = client.get(page).headers["content-security-policy"]
    assert policy.startswith("img-src 'self'") and "http" not in policy

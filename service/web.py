"""The search page: plain HTML, CSS and JS served by Flask, no build step."""
from flask import Blueprint, Response

web = Blueprint("web", __name__, static_folder="static", static_url_path="/static")


@web.get("/")
def index() -> Response:
    return web.send_static_file("index.html")

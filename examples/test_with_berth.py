"""A private registry for a pytest suite: one per session, with known
images, gone when the session ends."""

import json
import os
import subprocess
import urllib.request

import pytest


@pytest.fixture(scope="session")
def registry():
    berth = subprocess.Popen(
        [os.environ.get("BERTH", "berth"), "serve", "--ephemeral",
         "--listen", "127.0.0.1:0", "--ready-json", "--exit-with-parent",
         "--preload", os.environ.get("LAYOUT", "fixtures/layouts/app")],
        stdout=subprocess.PIPE, text=True)
    ready = json.loads(berth.stdout.readline())
    yield ready["url"]
    berth.terminate()
    try:
        berth.wait(timeout=30)
    except subprocess.TimeoutExpired:
        berth.kill()  # its directory goes at the next ephemeral start
        berth.wait()


def test_the_preloaded_image_is_there(registry):
    with urllib.request.urlopen(f"{registry}/v2/fixtures/app/tags/list") as answer:
        assert json.load(answer)["tags"] == ["1"]

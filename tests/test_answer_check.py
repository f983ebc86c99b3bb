"""After a deploy, what answers is checked: the predictor's V2 answer against the registered version's own
digits for the same seeds. The predictor here is a local HTTP stand-in that answers what the test makes
it answer (the serving image itself answers in tests/test_containers.py); the registered versions and
their files are the lab's, real."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import recording_server
from training import answer_check
from training.kserve import DeployError

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lab")]


@pytest.fixture(scope="module")
def versions(lab):
    """Model `answer-check`: version 1 the trained generator, version 2 the worse one; with each one's
    own digits for the check's seeds."""
    name = "answer-check"
    lab.register(name, "trained")
    lab.register(name, "worse")
    return name, {v: answer_check.registered_digits(lab.client, name, v) for v in ("1", "2")}


def answering(digits: np.ndarray | None, status: int = 200):
    """A V2 predictor that answers `digits` (None: a body without outputs) with `status`."""
    def answer(request):
        if request["path"] != "/v2/models/mnist-gan/infer" or request["body"] != answer_check.request_body():
            return 404, {"error": "not the check's request"}
        if status != 200:
            return status, {"error": "model failed to load"}
        if digits is None:
            return 200, {"model_name": "mnist-gan"}
        return 200, {"outputs": [{"name": "output-1", "datatype": "UINT8", "shape": list(digits.shape),
                                  "data": digits.ravel().tolist()}]}
    return recording_server.serve(answer, [])


def service(url: str | None) -> dict:
    return {"metadata": {"name": "mnist-gan"}, "status": {"url": url} if url else {}}


def test_the_versions_own_digits_pass_even_a_grey_level_off(lab, versions):
    name, digits = versions
    assert digits["1"].shape == (4, 28, 28) and digits["1"].dtype == np.uint8
    assert not np.array_equal(digits["1"], digits["2"])
    one_off = (digits["1"].astype(np.int16) + np.where(digits["1"] < 128, 1, -1)).astype(np.uint8)
    for answered in (digits["1"], one_off):
        with answering(answered) as url:
            said = answer_check.check(lab.client, name, "1", service(url))
        assert said == "its answer checked: the digits of version 1 for seeds [0, 1]"


@pytest.mark.parametrize(("answered", "status", "refusal"), [
    ("other", 200, "answered other digits than version 1 draws for seeds [0, 1] (pixels differ by up to"),
    ("fewer", 200, "answered (2, 28, 28) digits for seeds [0, 1], version 1 draws (4, 28, 28)"),
    ("none", 200, "answered no V2 digits (KeyError"),
    ("own", 500, "answered HTTP 500: {\"error\": \"model failed to load\"}"),
], ids=["another model", "too few", "no outputs", "a server error"])
def test_any_other_answer_fails_the_deploy_in_one_line(lab, versions, answered, status, refusal):
    name, digits = versions
    body = {"other": digits["2"], "fewer": digits["1"][:2], "none": None, "own": digits["1"]}[answered]
    with answering(body, status) as url, pytest.raises(DeployError) as failed:
        answer_check.check(lab.client, name, "1", service(url))
    assert refusal in str(failed.value) and "\n" not in str(failed.value)


def test_no_answer_fails_and_no_url_is_said(lab, versions):
    name, _ = versions
    with answering(None) as url:
        pass  # the server is gone: nothing listens there any more
    with pytest.raises(DeployError, match="did not answer"):
        answer_check.check(lab.client, name, "1", service(url), timeout_s=5)
    assert answer_check.check(lab.client, name, "1", service(None)) == (
        "its answer not checked: KServe reported no URL")

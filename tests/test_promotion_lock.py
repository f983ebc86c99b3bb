"""The promotion lock on a real registry: a sqlite one for the lock's turns (a stale lock broken, a fresh
one waited for, staleness judged on the registry's clock, a release that leaves another's lock alone),
and a real `mlflow server` with basic auth for a stale lock of another user that this one may not
break (403)."""

from __future__ import annotations

import collections
import importlib.util
import os
import tempfile
import time

import pytest
import requests
from mlflow import MlflowClient

from infra.local_stack import mlflow_server
from infra.tracking_server import auth_config
from training import promotion_lock as module
from training.promotion_lock import lock_name, promotion_lock
from training.registry import RegistryError


class CountingClient(MlflowClient):
    """A real client that counts the registry calls the lock makes, and the time spent in them."""

    def __init__(self, tracking_uri: str):
        super().__init__(tracking_uri)
        self.calls, self.busy_s, self.inside = collections.Counter(), 0.0, False

    def _call(self, kind: str, method, *args, **kwargs):
        if self.inside:  # MLflow's own look-up inside update and delete: part of that call
            return method(*args, **kwargs)
        self.calls[kind] += 1
        started, self.inside = time.monotonic(), True
        try:
            return method(*args, **kwargs)
        finally:
            self.busy_s += time.monotonic() - started
            self.inside = False

    def create_registered_model(self, *args, **kwargs):
        return self._call("create", super().create_registered_model, *args, **kwargs)

    def get_registered_model(self, *args, **kwargs):
        return self._call("get", super().get_registered_model, *args, **kwargs)

    def update_registered_model(self, *args, **kwargs):
        return self._call("update", super().update_registered_model, *args, **kwargs)

    def delete_registered_model(self, *args, **kwargs):
        return self._call("delete", super().delete_registered_model, *args, **kwargs)

    def reset(self) -> None:
        self.calls.clear()
        self.busy_s = 0.0


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    MlflowClient(uri).search_registered_models()  # the schema, once
    return uri


def holder_of(client, name: str) -> str | None:
    models = client.search_registered_models(f"name = '{lock_name(name)}'")
    return models[0].tags.get("holder") if models else None


def slowest_call_s(client: MlflowClient, name: str) -> float:
    """The slowest of three reads of the lock: the registry's pace now (a basic-auth server on a loaded
    machine answers in seconds, not milliseconds)."""
    times = []
    for _ in range(3):
        started = time.monotonic()
        client.get_registered_model(lock_name(name))
        times.append(time.monotonic() - started)
    return max(times)


def waits_then_times_out(client: CountingClient, name: str,
                         min_timeout_s: float) -> tuple[RegistryError, float]:
    """Waits for a lock another holds, sleeping between tries, and raises at the deadline. The deadline
    leaves room for three tries (four registry calls each) at the registry's measured pace; returns the
    error and that deadline."""
    call_s = slowest_call_s(client, name)
    timeout_s = max(min_timeout_s, 3 * (4 * call_s + 0.5))
    client.reset()
    started = time.monotonic()
    with pytest.raises(RegistryError) as raised, promotion_lock(client, name, timeout_s=timeout_s):
        pytest.fail("entered a lock another holds")
    waited = time.monotonic() - started
    tries = client.calls["create"]
    assert timeout_s <= waited < timeout_s + 5 + 4 * call_s
    # between two tries it slept 0.2-0.5 s outside the registry's calls (a spinning waiter does not)
    assert tries >= 2 and waited - client.busy_s >= 0.2 * (tries - 1), (client.calls, waited, client.busy_s)
    # touched at its first try, then at most once every TOUCH_EVERY_S, not at every try (a registry slow
    # enough under load stretches the deadline past TOUCH_EVERY_S, and a second touch is then due)
    touches_due = 1 + int(waited // module.TOUCH_EVERY_S)
    assert 1 <= client.calls["update"] <= touches_due, (client.calls, waited)
    return raised.value, timeout_s


def test_a_stale_lock_is_broken_and_taken(registry, monkeypatch, capsys):
    monkeypatch.setattr(module, "LOCK_STALE_S", 0.2)
    client, name = MlflowClient(registry), "stale"
    # a killed holder whose clock runs an hour ahead: by its own clock, its lock would never age
    ahead = str(time.time() + 3600)
    client.create_registered_model(lock_name(name), tags={"holder": "killed", "since": ahead})
    time.sleep(0.3)
    with promotion_lock(client, name, timeout_s=10):
        assert f"pid {os.getpid()} " in holder_of(client, name)
    assert holder_of(client, name) is None, "released"
    said = capsys.readouterr().err
    assert f"broke {name}.promotion-lock, held by killed since" in said and "stale after 0.2 s" in said


def test_a_fresh_lock_is_waited_for_sleeping_between_tries_then_the_wait_times_out(registry, capsys):
    client, name = CountingClient(registry), "fresh"
    client.create_registered_model(lock_name(name), tags={"holder": "other", "since": str(time.time())})
    error, timeout_s = waits_then_times_out(client, name, min_timeout_s=1.5)
    assert str(error).startswith(f"gave up waiting for {name}.promotion-lock after {timeout_s:g} s: "
                                 "held by other since ")
    assert "could not be broken" not in str(error)
    assert holder_of(client, name) == "other", "a fresh lock is not broken"
    said = [line for line in capsys.readouterr().err.splitlines() if "waiting for" in line]
    assert len(said) == 1 and said[0].startswith(
        f"promote: waiting for {name}.promotion-lock: another promotion or rollback of {name} holds it "
        "(held by other since "), said


def test_staleness_is_judged_on_the_registrys_clock_not_the_holders(registry, capsys):
    client, name = CountingClient(registry), "skewed"
    # by its holder's clock (or a waiter's), this lock was taken in 1970; the registry made it just now
    client.create_registered_model(lock_name(name), tags={"holder": "other", "since": "0"})
    waits_then_times_out(client, name, min_timeout_s=1)
    assert holder_of(client, name) == "other"
    assert "broke" not in capsys.readouterr().err


def test_the_release_deletes_only_a_lock_this_process_still_holds(registry, capsys):
    client, name = MlflowClient(registry), "released"
    with promotion_lock(client, name):
        # a waiter judged us stale: it broke our lock and took it
        client.delete_registered_model(lock_name(name))
        client.create_registered_model(lock_name(name), tags={"holder": "waiter"})
    assert holder_of(client, name) == "waiter", "the new holder's lock is left alone"
    assert (f"promote: {name}.promotion-lock was taken over by waiter since " in capsys.readouterr().err)

    client.delete_registered_model(lock_name(name))
    with pytest.raises(ValueError, match="the body failed"), promotion_lock(client, name):
        client.delete_registered_model(lock_name(name))  # broken, not (yet) taken
        raise ValueError("the body failed")
    assert f"{name}.promotion-lock was gone at release" in capsys.readouterr().err


# basic auth: users alice and bob; where nobody granted more, a user may only read (default READ)
ADMIN = ("admin", "admin-password-1")
USERS = {"alice": "alice-password-1", "bob": "bob-password-1"}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A real `mlflow server --app-name basic-auth`, as the tracking-server image configures it."""
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.skip("MLflow's basic-auth app needs Flask-WTF (mlflow[auth]), which this venv lacks")
    directory = tmp_path_factory.mktemp("auth-server")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(directory))  # where auth_config writes its ini
        patch.setenv("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ")
        config = auth_config(f"sqlite:///{directory / 'auth.db'}")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": "lock-test-secret-key"}
    with mlflow_server(directory / "mlflow", env=env, extra_args=("--app-name", "basic-auth")) as uri:
        for user, password in USERS.items():
            admin(uri, "/api/2.0/mlflow/users/create", username=user, password=password)
        yield uri


def admin(uri: str, path: str, **body) -> None:
    response = requests.post(f"{uri}{path}", json=body, auth=ADMIN, timeout=30)
    assert response.status_code == 200, response.text


def grant(uri: str, user: str, model: str, permission: str) -> None:
    """`user`'s permission on registered model `model`, whatever it was."""
    target = {"username": user, "resource_type": "registered_model", "resource_id": model}
    requests.post(f"{uri}/api/3.0/mlflow/users/permissions/revoke", json=target, auth=ADMIN, timeout=30)
    admin(uri, "/api/3.0/mlflow/users/permissions/grant", **target, permission=permission)


def as_user(monkeypatch, uri: str, user: str) -> CountingClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)  # read at each request
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", USERS[user])
    return CountingClient(uri)


@pytest.mark.slow
def test_a_stale_lock_of_another_user_is_waited_for_and_the_timeout_names_the_403(auth_server, monkeypatch,
                                                                                  capsys):
    monkeypatch.setattr(module, "LOCK_STALE_S", 0.5)
    name = "shared"
    as_user(monkeypatch, auth_server, "alice").create_registered_model(
        lock_name(name), tags={"holder": "alice's killed promotion"})
    time.sleep(1)
    bob = as_user(monkeypatch, auth_server, "bob")
    for permission, refused in (("READ", "touching it to read its age answered PERMISSION_DENIED: "),
                                ("EDIT", "stale after 0.5 s) and its delete answered PERMISSION_DENIED: ")):
        if permission != "READ":
            grant(auth_server, "bob", lock_name(name), permission)
        error, _ = waits_then_times_out(bob, name, min_timeout_s=3)
        assert refused in str(error) and "403" in str(error), error
        said = [line for line in capsys.readouterr().err.splitlines() if "cannot break" in line]
        assert len(said) == 1 and said[0].startswith(
            f"promote: cannot break {name}.promotion-lock, held by alice's killed promotion since "), said
        assert refused in said[0] and "403" in said[0]
        assert holder_of(bob, name) == "alice's killed promotion"


@pytest.mark.slow
def test_an_error_reading_the_lock_at_release_does_not_hide_the_bodys(auth_server, monkeypatch, capsys):
    bob, name = as_user(monkeypatch, auth_server, "bob"), "bobs"
    with pytest.raises(ValueError, match="the body failed"), promotion_lock(bob, name):
        grant(auth_server, "bob", lock_name(name), "DENY")  # bob may no longer even read his lock
        raise ValueError("the body failed")
    said = capsys.readouterr().err
    assert f"promote: could not release {name}.promotion-lock after an error: PERMISSION_DENIED" in said

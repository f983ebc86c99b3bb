"""The promotion lock of a model: promotions and rollbacks of one model, from any process or machine that
shares the registry, take turns under it.

The lock is a registered model named `<name>.promotion-lock` that exists only while a promotion runs;
the registry's unique names make its creation atomic. Contract:

- This process holds the lock exactly when the lock exists with this process's `holder` tag.
- Creating it succeeds, or fails with one of CONTENTION (someone holds it, or released it just now):
  then the process waits its turn, sleeping 0.2-0.5 s between tries, until `timeout_s`, then raises
  RegistryError. Any other answer to the creation, or to reading the lock, is raised.
- A lock older than LOCK_STALE_S was left by a killed process and is broken. Its age is read on the
  registry's clock, never a client's: a waiter touches the lock (rewrites its description, at most every
  TOUCH_EVERY_S) and the registry stamps its own time as `last_updated_timestamp`, next to the
  `creation_timestamp` it stamped at creation (a tracking server's clock; with an embedded database,
  the clocks of the processes that write it, which share one machine).
- A waiter that cannot touch or delete a stale lock (another user's under basic auth: 403; or any other
  error) says so once on stderr and keeps waiting; its timeout error names why.
- The release deletes the lock only while this process still holds it: a lock that a waiter broke as
  stale and took is left to its new holder. An error while releasing never hides one from the body.

Between reading who holds the lock and deleting it there is one request in which another process may
break and re-create it; the registry offers no conditional delete. Both windows need a lock held past
LOCK_STALE_S, which only a killed or stuck process leaves.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import random
import socket
import sys
import time
import uuid

from training.config import PROMOTION_LOCK_SUFFIX

LOCK_STALE_S = 300  # a promotion lock older than this was left by a killed process and is broken
TOUCH_EVERY_S = 10  # how often a waiter stamps the registry's time on the lock to read its age
# What MLflow answers to the creation of a lock another promotion holds: "already exists", or, when
# that holder releases it at the same moment, "does not exist" (the store looks the existing model up
# to word its error, and finds it gone).
CONTENTION = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")
GONE = "RESOURCE_DOES_NOT_EXIST"


def lock_name(name: str) -> str:
    return name + PROMOTION_LOCK_SUFFIX


@contextlib.contextmanager
def promotion_lock(client, name: str, timeout_s: float = 600):
    """Hold the promotion lock of model `name` for the body of the `with` (see the module's contract)."""
    from mlflow.exceptions import MlflowException

    from training.registry import RegistryError

    lock, me = lock_name(name), _new_holder()
    description = (f"Not a model: held while a version of {name} is being promoted or rolled back, "
                   "and deleted right after.")
    deadline, next_touch = time.monotonic() + timeout_s, time.monotonic()
    held = stuck = None  # the lock as last read; why it could not be broken
    said_waiting = said_stuck = False
    while True:
        try:  # `since` (the holder's clock) is only for older versions of this lock, which judge by it
            client.create_registered_model(lock, tags={"holder": me, "since": str(time.time())},
                                           description=description)
            break
        except MlflowException as err:
            if err.error_code not in CONTENTION:
                raise
        seen = _read(client, lock)  # None: released since; try again
        if seen is not None:
            if seen.tags.get("holder") == me:
                break  # our own creation, answered as "already exists" after a retried request
            held = seen
            if time.monotonic() >= next_touch:
                next_touch = time.monotonic() + TOUCH_EVERY_S
                stuck = _break_if_stale(client, lock, description)
                if stuck and not said_stuck:
                    _say(f"cannot break {lock}, held by {_who(held)}: {stuck}")
                    said_stuck = True
        if time.monotonic() > deadline:
            raise RegistryError(f"gave up waiting for {lock} after {timeout_s:g} s: held by {_who(held)}"
                                + (f"; it could not be broken: {stuck}" if stuck else ""))
        if seen is not None and not said_waiting:
            _say(f"waiting for {lock}: another promotion or rollback of {name} holds it "
                 f"(held by {_who(seen)})")
            said_waiting = True
        time.sleep(random.uniform(0.2, 0.5))  # jitter, so that waiting racers spread out
    try:
        yield
    except BaseException:
        try:
            _release(client, lock, me)
        except MlflowException as err:  # the body's error is the one to see
            _say(f"could not release {lock} after an error: {_one_line(err)}")
        raise
    _release(client, lock, me)


def _read(client, lock: str):
    """The lock (a RegisteredModel), or None when no one holds it."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(lock)
    except MlflowException as err:
        if err.error_code == GONE:
            return None
        raise


def _break_if_stale(client, lock: str, description: str) -> str | None:
    """Touch the lock so that the registry stamps its time on it, and delete it when it is older than
    LOCK_STALE_S by that clock. Returns why a lock that may be stale could not be broken, else None."""
    from mlflow.exceptions import MlflowException

    try:
        touched = client.update_registered_model(lock, description=description)
    except MlflowException as err:
        return None if err.error_code == GONE else f"touching it to read its age answered {_one_line(err)}"
    age_s = (touched.last_updated_timestamp - touched.creation_timestamp) / 1000
    if age_s <= LOCK_STALE_S:
        return None
    try:
        client.delete_registered_model(lock)
    except MlflowException as err:
        if err.error_code == GONE:
            return None
        return (f"it is {age_s:.0f} s old on the registry's clock (stale after {LOCK_STALE_S:g} s) and "
                f"its delete answered {_one_line(err)}")
    _say(f"broke {lock}, held by {_who(touched)}: {age_s:.0f} s old on the registry's clock, stale after "
         f"{LOCK_STALE_S:g} s (left by a killed promotion)")
    return None


def _release(client, lock: str, me: str) -> None:
    """Delete the lock if this process still holds it; leave it to a process that broke it and took it."""
    from mlflow.exceptions import MlflowException

    gone = f"{lock} was gone at release: another process broke it as stale"
    held = _read(client, lock)
    if held is None:
        _say(gone)
        return
    if held.tags.get("holder") != me:
        _say(f"{lock} was taken over by {_who(held)} (broken as stale): left to it")
        return
    try:
        client.delete_registered_model(lock)
    except MlflowException as err:
        if err.error_code != GONE:
            raise
        _say(gone)


def _new_holder() -> str:
    """Unique to this acquisition, and says who to a person reading the lock."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no name
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:12]}"


def _who(lock) -> str:
    """Who holds the lock and since when, on the registry's clock."""
    if lock is None:
        return "another promotion"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lock.creation_timestamp / 1000))
    return f"{lock.tags.get('holder', 'an unknown holder')} since {since}"


def _one_line(err) -> str:
    from training.registry import one_line  # MLflow imported only once a lock is taken

    return one_line(err)


def _say(line: str) -> None:
    print(f"promote: {line}", file=sys.stderr, flush=True)

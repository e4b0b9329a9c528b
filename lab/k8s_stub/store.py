"""Storage under the API semantics: objects per resource in key order (namespace, name), one
global resourceVersion, a bounded event history for watches and for consistent paged lists.

Stored objects are never changed in place: a write stores a new dict, so readers may serialise
what they got without copying, and the history keeps the objects as they were.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .errors import ApiError

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
BOOKMARK_INTERVAL = 60.0  # seconds between BOOKMARK events on an idle watch (the API server's is about a minute)


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    resource: str  # Resource.qualified
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None  # before a MODIFIED or DELETED: selector transitions, and lists at older versions


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


class Store:
    """Objects by resource and key, the resourceVersion counter and the watch history.
    Callers hold `cond` around a read-modify-write."""

    def __init__(self, history: int = 1000) -> None:
        self.cond = threading.Condition()
        self.rv = 0
        self.tables: dict[str, dict[Key, Obj]] = {}
        self._keys: dict[str, list[Key]] = {}  # each table's keys, sorted
        self.history: deque[WatchEvent] = deque()
        self.max_history = history
        self.compacted = 0  # the newest resourceVersion whose event was dropped: older ones are gone
        self.stopped = False
        self._snapshot: tuple[str, int, list[Key], dict[Key, Obj]] | None = None

    # reads (hold cond)

    def lookup(self, resource: str, key: Key) -> Obj | None:
        return self.tables.get(resource, {}).get(key)

    def count(self, resource: str) -> int:
        return len(self.tables.get(resource, {}))

    def namespace_used(self, namespace: str) -> list[tuple[str, Key]]:
        return [(resource, key) for resource, keys in self._keys.items() for key in self._in_namespace(keys, namespace)]

    @staticmethod
    def _in_namespace(keys: list[Key], namespace: str) -> list[Key]:
        start = bisect.bisect_left(keys, (namespace, ""))
        end = bisect.bisect_left(keys, (namespace + "\x00", ""))
        return keys[start:end]

    def page(self, resource: str, namespace: str | None, at: int | None, after: Key | None, limit: int,
             match: Callable[[Obj], bool] | None) -> tuple[list[Obj], int, Key | None, int | None]:
        """Up to `limit` (0: all) objects in key order after `after`, as they were at resourceVersion
        `at` (None: now): (objects, resourceVersion, last key when more follow, how many more
        when that is known without filtering)."""
        rv = self.rv if at is None else at
        keys, table = self._state(resource, rv)
        if namespace is not None:
            keys = self._in_namespace(keys, namespace)
        start = bisect.bisect_right(keys, after) if after is not None else 0
        items: list[Obj] = []
        index = start
        for index in range(start, len(keys)):
            obj = table[keys[index]]
            if match is None or match(obj):
                items.append(obj)
                if limit and len(items) == limit:
                    break
        else:
            index = len(keys)
        more = limit and len(items) == limit and index + 1 < len(keys)
        if not more:
            return items, rv, None, None
        return items, rv, keys[index], (len(keys) - index - 1) if match is None else None

    def _state(self, resource: str, rv: int) -> tuple[list[Key], dict[Key, Obj]]:
        """Sorted keys and objects of a resource at a resourceVersion, rebuilt from the history
        when it is not the current one (410 when the history no longer reaches it)."""
        if rv >= self.rv:
            return self._keys.get(resource, []), self.tables.get(resource, {})
        if rv < self.compacted:
            raise gone("The provided continue parameter is too old to display a consistent list result. You can start a "
                       "new list without the continue parameter.")
        if self._snapshot and self._snapshot[:2] == (resource, rv):
            return self._snapshot[2], self._snapshot[3]
        table = dict(self.tables.get(resource, {}))
        for event in reversed(self.history):
            if event.rv <= rv:
                break
            if event.resource == resource:
                key = _key(event.obj)
                if event.type == "ADDED":
                    table.pop(key, None)
                elif event.old is not None:
                    table[key] = event.old
        keys = sorted(table)
        self._snapshot = (resource, rv, keys, table)
        return keys, table

    # writes (hold cond)

    def put(self, resource: str, obj: Obj, old: Obj | None) -> Obj:
        """Store a new object (or a new version of `old`) under the next resourceVersion."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = _key(obj)
        table = self.tables.setdefault(resource, {})
        if key not in table:
            bisect.insort(self._keys.setdefault(resource, []), key)
        table[key] = obj
        self._record(WatchEvent(self.rv, resource, "MODIFIED" if old is not None else "ADDED", obj, old))
        return obj

    def remove(self, resource: str, old: Obj) -> Obj:
        """Delete an object; the DELETED event carries it with the deletion's resourceVersion."""
        key = _key(old)
        del self.tables[resource][key]
        keys = self._keys[resource]
        del keys[bisect.bisect_left(keys, key)]
        self.rv += 1
        final = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self.rv)}}
        self._record(WatchEvent(self.rv, resource, "DELETED", final, old))
        return final

    def replace_quietly(self, resource: str, obj: Obj) -> None:
        """Swap a stored object for an equivalent one without a new resourceVersion (defaults a
        changed schema adds, which the API server applies when reading)."""
        self.tables[resource][_key(obj)] = obj

    def drop_resource(self, resource: str) -> None:
        self.tables.pop(resource, None)
        self._keys.pop(resource, None)

    def _record(self, event: WatchEvent) -> None:
        self.history.append(event)
        while len(self.history) > self.max_history:
            self.compacted = self.history.popleft().rv
        self._snapshot = None if self._snapshot and self._snapshot[0] == event.resource else self._snapshot
        self.cond.notify_all()

    # watch

    def events_after(self, cursor: int) -> Iterator[WatchEvent]:
        """Events newer than `cursor` (hold cond; resourceVersions in the history are consecutive)."""
        if not self.history or cursor >= self.history[-1].rv:
            return iter(())
        return islice(self.history, max(0, cursor - self.history[0].rv + 1), None)

    def watch(self, resource: str, namespace: str | None, since: str | None, match: Callable[[Obj], bool] | None,
              deadline: float, bookmarks: bool = False, initial_events: bool = False) -> Iterator[tuple[str, Obj]]:
        """(type, object) as the API streams them: from `since` (exclusive), or the current objects
        as ADDED first when no resourceVersion (or "0") is given or `initial_events` asks for them
        (then a BOOKMARK marks their end). With `bookmarks`, a BOOKMARK ("object" = the
        resourceVersion) every BOOKMARK_INTERVAL seconds and just before the watch times out."""
        with self.cond:  # checked before the stream starts, so a bad request still gets its own status
            if since in (None, "", "0") or initial_events:
                cursor = self.rv
                backlog = self.page(resource, namespace, None, None, 0, match)[0]
            else:
                cursor, backlog = parse_rv(since), []
                if cursor > self.rv:
                    raise ApiError(504, "Timeout", f"Too large resource version: {cursor}, current: {self.rv}")
        return self._follow(resource, namespace, match, cursor, backlog, deadline, bookmarks, initial_events)

    def _follow(self, resource: str, namespace: str | None, match: Callable[[Obj], bool] | None, cursor: int,
                backlog: list[Obj], deadline: float, bookmarks: bool, initial_events: bool) -> Iterator[tuple[str, Obj]]:
        in_scope = (lambda o: (namespace is None or o["metadata"].get("namespace") == namespace)  # noqa: E731
                    and (match is None or match(o)))
        for obj in backlog:
            yield "ADDED", obj
        if initial_events:
            yield "BOOKMARK", {"resourceVersion": str(cursor), "initialEventsEnd": True}
        next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
        while True:
            bookmark, done = False, False
            with self.cond:
                if cursor < self.compacted:
                    yield "ERROR", gone(f"too old resource version: {cursor} ({self.compacted})").status()
                    return
                pending = [e for e in self.events_after(cursor) if e.resource == resource]
                # An open watch follows the global resourceVersion, like the API server's watch
                # cache: a quiet resource does not expire while other resources change.
                cursor = max(cursor, self.rv)
                now = time.monotonic()
                if not pending:
                    done = self.stopped or now >= deadline
                    bookmark = bookmarks and not self.stopped and (done or now >= next_bookmark)
                    if not done and not bookmark:
                        wake = min(deadline, next_bookmark) if bookmarks else deadline
                        self.cond.wait(min(1.0, max(0.0, wake - now)))
                        continue
            for event in pending:
                if translated := _transition(event, in_scope):
                    yield translated
            if bookmark:
                next_bookmark = now + BOOKMARK_INTERVAL
                yield "BOOKMARK", {"resourceVersion": str(cursor)}
            if done:
                return

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def clone(obj: Any) -> Any:
    """A deep copy of JSON data (several times faster than copy.deepcopy)."""
    return json.loads(json.dumps(obj))


def parse_rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, "BadRequest", f'invalid resource version "{value}"') from None


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _transition(event: WatchEvent, in_scope: Callable[[Obj], bool]) -> tuple[str, Obj] | None:
    now = in_scope(event.obj)
    if event.type == "MODIFIED":
        before = event.old is not None and in_scope(event.old)
        if now != before:
            return ("ADDED" if now else "DELETED"), event.obj
    return (event.type, event.obj) if now else None

# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is wrong with an input object, as data: which object, which of its fields, what.

Every stage reports ``Problem``s and hands them on; only the edges (action plugins, modules,
daemons, watcher logs) turn them into the one text format users read,
``<object>: <field>: <what is wrong>``. A stage that builds one object from another (an LB from
a Kubernetes Service) reports its problems on the source object's own fields with a
``FieldSources`` map, so nothing ever takes a rendered message apart again.

Standard library only: this file also runs on gateways inside modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one object.

    ``subject`` names the object as its users name it: an LB name, a Service key
    ``cluster/namespace/name``, a gateway host, ``pool <name>``; empty when the problem is
    about several objects at once (then the message names them). ``field`` is the path inside
    that object in the object's own terms (``spec.ports[0].port`` for a Service,
    ``ports[0].port`` for an LB definition); empty for the object as a whole.
    """

    subject: str
    field: str
    message: str

    def render(self) -> str:
        return ": ".join(part for part in (self.subject, self.field, self.message) if part)

    def __str__(self) -> str:
        return self.render()

    def to_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "field": self.field, "message": self.message}

    @classmethod
    def from_dict(cls, raw: Any, subject: str = "") -> "Problem":
        """A problem read back from plain data (an inventory variable); anything that is not a
        problem mapping becomes the message of a problem about ``subject``."""
        if isinstance(raw, Mapping):
            return cls(str(raw.get("subject") or subject), str(raw.get("field") or ""), str(raw.get("message") or ""))
        return cls(subject, "", str(raw))


def field_path(*parts: str | int) -> str:
    """The one spelling of a field path: ``field_path("ports", 0, "port")`` is ``ports[0].port``.

    Producers and ``FieldSources`` maps both build paths with it, so they always agree.
    """
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def render(problems: Iterable[Problem]) -> list[str]:
    """The text users read, one line per problem."""
    return [problem.render() for problem in problems]


def to_data(problems: Iterable[Problem]) -> list[dict[str, str]]:
    return [problem.to_dict() for problem in problems]


def from_data(raws: Iterable[Any] | None, subject: str = "") -> list[Problem]:
    return [Problem.from_dict(raw, subject) for raw in raws or ()]


@dataclass
class Report:
    """Problems (the object is refused) and warnings (accepted, but say so) about one object,
    collected so that a user sees all of them in one run."""

    subject: str
    problems: list[Problem] = dataclass_field(default_factory=list)
    warnings: list[Problem] = dataclass_field(default_factory=list)

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(self.subject, where, message))

    def warning(self, where: str, message: str, subject: str | None = None) -> None:
        """``subject``: a part of the object with its own name (one IP family's LB of a Service)."""
        self.warnings.append(Problem(subject or self.subject, where, message))


@dataclass(frozen=True)
class FieldSources:
    """Where the fields of a derived object came from in its source object.

    ``fields`` maps a field path of the derived object (``ports[0].port`` of an LB definition)
    to the path in the source object that set it (``spec.ports[2].port`` of the Service). A
    problem on a mapped field is reported on the source object; any other stays on the
    derived object, in its own terms.
    """

    subject: str
    fields: Mapping[str, str]

    def locate(self, problem: Problem) -> Problem:
        source_field = self.fields.get(problem.field)
        if source_field is None:
            return problem
        return replace(problem, subject=self.subject, field=source_field)

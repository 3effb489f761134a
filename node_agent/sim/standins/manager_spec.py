"""The stand-in Manager held to the real Manager's OpenAPI specification
(``pkg/api/flamenco-openapi.yaml``), with ``openapi-core`` (a test dependency: only
``standins.manager`` imports this module, and only when the check is switched on).

The real Manager 3.x validates every request to a path of its specification before a
handler sees it (``internal/manager/api_impl/openapi_auth.go``: ``SwaggerValidator``,
oapi-codegen's echo middleware over kin-openapi): a body the specification refuses is
400 ``{"message": "request body has an error: ..."}`` (echo's error body, not the
handlers' ``{"code", "message"}``). ``ManagerSpec.refusal`` gives that message.

Nothing validates the real Manager's answers, but the specification is what its
clients are generated from: an answer of the stand-in outside it is a bug of the
stand-in (``ManagerSpec.violation``), except where the real Manager's own answers
differ from its specification (``_as_real`` lists them, with their source). A status
the operation does not list (the specification often lists only 200) is what the
handlers' ``sendAPIError`` sends (``api_impl.go``): it must be exactly an ``Error``
``{"code": <that status>, "message"}``."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.validation.exceptions import ValidationError
from openapi_core.validation.request.exceptions import (
    InvalidRequestBody,
    MissingRequestBodyError,
    RequestValidationError,
    SecurityValidationError,
)
from werkzeug.datastructures import Headers, ImmutableMultiDict

from node_agent.sim.standins.server import Request, Response


@dataclass
class _CheckedRequest:
    """A request in the shape ``openapi-core`` reads (its ``Request`` protocol)."""

    host_url: str
    path: str
    method: str
    body: Optional[bytes]
    content_type: str
    parameters: RequestParameters


@dataclass(frozen=True)
class _CheckedResponse:
    """An answer in the shape ``openapi-core`` reads (its ``Response`` protocol)."""

    status_code: int
    data: Optional[bytes]
    content_type: str
    headers: Headers


@functools.cache
def _load(path: str) -> OpenAPI:
    """The specification, loaded once per process (it takes most of a second)."""
    return OpenAPI.from_file_path(path)


def _first_line(text: str) -> str:
    # As the echo middleware does with kin-openapi's multi-line errors.
    return text.strip().splitlines()[0] if text.strip() else text


def _schema_errors(exc: Exception) -> Optional[list[Any]]:
    """jsonschema's errors behind an openapi-core error, or None if it has none."""
    errors = getattr(exc.__cause__, "schema_errors", None)
    return None if errors is None else list(errors)


class ManagerSpec:
    """The real Manager's specification, to check requests and answers against."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._api = _load(path)

    def refusal(self, request: Request) -> Optional[str]:
        """The message of the 400 the real Manager's validator answers this request
        with (kin-openapi's wording approximately: its first line), or None."""
        try:
            self._api.validate_request(_checked_request(request))
        except PathError:
            return None  # not an operation of the specification: echo's router answers
        except SecurityValidationError:
            return None  # the stand-in's own check answers 403 first, as the real one
        except MissingRequestBodyError:
            return "request body has an error: value is required but missing"
        except InvalidRequestBody as exc:
            errors = _schema_errors(exc) or []
            detail = "; ".join(_first_line(e.message) for e in errors)
            return f"request body has an error: doesn't match schema: {detail or exc}"
        except RequestValidationError as exc:
            return _first_line(str(exc.__cause__ or exc))
        return None

    def violation(self, request: Request, response: Response) -> Optional[str]:
        """Why this answer is one the real Manager would not send, or None."""
        body = response.encoded()
        answer = _CheckedResponse(
            status_code=response.status,
            data=body or None,
            content_type=response.content_type.lower() if body else "",
            headers=Headers(list(response.headers)),
        )
        where = f"{request.method} {urlsplit(request.path).path} answered {response.status}"
        try:
            self._api.validate_response(_checked_request(request), answer)
        except PathError:
            return None  # echo's router answered: no operation to check against
        except ResponseNotFound:
            if not _is_api_error(response):
                return f"{where}, a status the specification does not list, without an Error"
        except ValidationError as exc:
            errors = _schema_errors(exc)
            if errors is None:
                return f"{where}: {_first_line(str(exc.__cause__ or exc))}"
            detail = "; ".join(_first_line(e.message) for e in errors if not _as_real(e))
            return f"{where}: {detail}" if detail else None
        return None


def _checked_request(request: Request) -> _CheckedRequest:
    url = urlsplit(request.path)
    headers = Headers(list(request.headers.items()))
    return _CheckedRequest(
        host_url="http://127.0.0.1",
        path=url.path,
        method=request.method.lower(),
        body=request.body or None,
        content_type=(headers.get("Content-Type") or "").lower() if request.body else "",
        parameters=RequestParameters(
            query=ImmutableMultiDict(parse_qsl(url.query)),
            header=headers,
            cookie=ImmutableMultiDict(),
        ),
    )


def _is_api_error(response: Response) -> bool:
    """Whether the answer is the handlers' ``api.Error`` for its status."""
    try:
        body: Any = json.loads(response.encoded())
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and set(body) == {"code", "message"}
        and body["code"] == response.status
        and isinstance(body["message"], str)
    )


def _as_real(error: Any) -> bool:
    """Whether a schema error (jsonschema's) is one the real Manager's own answers
    have, so that the stand-in must have it too:

    - a worker that registered but never signed on has the status ``""``, outside the
      ``WorkerStatus`` enum (``persistence.Worker``'s zero value, answered as is by
      ``RegisterWorker`` in ``workers.go`` and ``workerSummary`` in
      ``worker_mgt.go``);
    - ``RegisteredWorker`` requires ``current_task``, a property it does not define and
      the generated ``api.RegisteredWorker`` (``pkg/api/openapi_types.gen.go``) lacks:
      ``RegisterWorker`` never sends it;
    - ``JobTasksSummary`` requires ``jobs`` where it means ``tasks`` (its only property;
      ``FetchJobTasks`` in ``jobs_query.go`` answers ``{"tasks": [...]}``)."""
    if error.validator == "enum" and error.instance == "" and list(error.path)[-1:] == ["status"]:
        return True
    if error.validator != "required":
        return False
    if "'current_task'" in error.message:
        return True
    instance = error.instance
    return "'jobs'" in error.message and isinstance(instance, dict) and "tasks" in instance

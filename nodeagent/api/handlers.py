"""gRPC method handlers built from a service descriptor, with strict request parsing.

grpcio reports a request that does not parse as UNKNOWN ("Unexpected
DecodeError"); a malformed request is the client's fault and must be
INVALID_ARGUMENT with a clear message. The deserializer marks such a request and
the handler rejects it before the servicer runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError


class Malformed:
    """A request that did not parse; carries why."""

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name, self.error = type_name, error


def _deserializer(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Malformed(cls.DESCRIPTOR.full_name, str(exc))

    return parse


def _message(request: Malformed) -> str:
    return f"malformed request: not a valid {request.type_name} ({request.error})"


class StreamReader:
    """A bidirectional stream's requests, one `read()` at a time, parsed strictly."""

    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    async def read(self) -> Any:
        """The next request, or None once the client has closed its side."""
        request = await self._context.read()
        if request is grpc.aio.EOF:
            return None
        if isinstance(request, Malformed):
            await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(request))
        return request


Authorize = Callable[[str, grpc.aio.ServicerContext], Awaitable[None]]
ErrorMap = Sequence[tuple[type[BaseException], grpc.StatusCode]]


async def _fail(context: grpc.aio.ServicerContext, exc: BaseException, errors: ErrorMap) -> None:
    for kind, code in errors:
        if isinstance(exc, kind):
            await context.abort(code, str(exc).strip("'\"") or type(exc).__name__)
    raise exc


def _guard(
    method: Callable[..., Any],
    name: str,
    authorize: Authorize | None,
    errors: ErrorMap,
    bidi: bool = False,
) -> Callable[..., Any]:
    async def admit(request: Any, context: grpc.aio.ServicerContext) -> None:
        """Checks every call passes before the servicer runs, streaming or not.

        Authorization comes first: an unauthorized caller is refused before it learns
        whether its request parsed. context.abort raises, so a failed check ends the call.
        """
        if authorize is not None:
            await authorize(name, context)
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(request))

    if bidi:

        @functools.wraps(method)
        async def session(requests: Any, context: grpc.aio.ServicerContext) -> None:
            """Authorised once, at the stream's start. The servicer reads and writes on the
            context itself (grpc.aio's read/write API: no generator between it and the
            wire, which a heartbeat stream pays for on every message), reading through
            a StreamReader, so a malformed message ends the stream as INVALID_ARGUMENT, as
            it would end a unary call."""
            if authorize is not None:
                await authorize(name, context)
            try:
                await method(StreamReader(context), context)
            except Exception as exc:
                await _fail(context, exc, errors)

        return session

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(request, context)
            try:
                async for item in method(request, context):
                    yield item
            except Exception as exc:  # mapped to a status, or re-raised
                await _fail(context, exc, errors)

        return stream

    @functools.wraps(method)
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await admit(request, context)
        try:
            return await method(request, context)
        except Exception as exc:
            await _fail(context, exc, errors)

    return unary


def service_handler(
    service: ServiceDescriptor,
    servicer: Any,
    *,
    authorize: Authorize | None = None,
    errors: ErrorMap = (),
    only: Collection[str] | None = None,
) -> grpc.GenericRpcHandler:
    """A generic handler serving the methods of `service` from `servicer` (grpc.aio).

    `authorize(method, context)` runs first and aborts the call if it may not
    proceed; `errors` maps exception types raised by the servicer to status codes;
    `only` names the methods served (the rest are UNIMPLEMENTED), default all.
    """
    handlers = {}
    for m in service.methods:
        if only is not None and m.name not in only:
            continue
        request_cls = message_factory.GetMessageClass(m.input_type)
        response_cls = message_factory.GetMessageClass(m.output_type)
        kind = (
            grpc.unary_stream_rpc_method_handler
            if m.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        bidi = m.client_streaming and m.server_streaming
        if bidi:
            kind = grpc.stream_stream_rpc_method_handler
        elif m.client_streaming:
            raise NotImplementedError(f"{m.full_name}: client streaming alone is not used")
        handlers[m.name] = kind(
            _guard(getattr(servicer, m.name), m.name, authorize, errors, bidi),
            request_deserializer=_deserializer(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)

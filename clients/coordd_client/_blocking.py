"""The blocking faces, derived mechanically from the asyncio client.

A blocking face (``Client``, ``client.memory``, ...) holds its asyncio twin and a private
event-loop thread. Each of its methods is one line naming the async method it runs::

    class Memory(Face[AsyncMemory]):
        put = blocking(AsyncMemory.put)

so both faces share every line of request building, error translation, renewal and session
bookkeeping, and the blocking signature is the async one (mypy sees it through the
descriptor). Callbacks that user code hands to the async logic (the work of
``idempotency.once``) run back in the caller's thread, not on the loop (see
:func:`call_in_caller`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

A = TypeVar("A")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
F = TypeVar("F")

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"] | None
_CALLER: contextvars.ContextVar[queue.SimpleQueue[_Job]] = contextvars.ContextVar("coordd_caller")


class LoopThread:
    """A private event loop on a daemon thread, shared by one blocking client's faces."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="coordd-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run *coro* on the loop; meanwhile run the callbacks it sends back to this thread."""
        inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()

        async def with_caller() -> T:
            _CALLER.set(inbox)
            return await coro

        done = asyncio.run_coroutine_threadsafe(with_caller(), self.loop)
        done.add_done_callback(lambda _: inbox.put(None))
        while (job := inbox.get()) is not None:
            fn, answer = job
            try:
                value = fn()
            except BaseException as exc:  # handed to the coroutine, which decides
                self.loop.call_soon_threadsafe(_settle, answer, None, exc)
            else:
                self.loop.call_soon_threadsafe(_settle, answer, value, None)
        return done.result()

    def iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator from a blocking caller, closing it when the caller stops."""

        async def step() -> T:
            return await anext(stream)

        try:
            while True:
                try:
                    yield self.run(step())
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                self.run(close())

    @contextlib.contextmanager
    def context(self, cm: AbstractAsyncContextManager[T]) -> Iterator[T]:
        """Enter an async context manager from a blocking ``with``."""
        value = self.run(_enter(cm))
        try:
            yield value
        except BaseException as exc:
            if not self.run(cm.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self.run(cm.__aexit__(None, None, None))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


def _settle(answer: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if answer.done():
        return
    if exc is not None:
        answer.set_exception(exc)
    else:
        answer.set_result(value)


async def _enter(cm: AbstractAsyncContextManager[T]) -> T:
    return await cm.__aenter__()


async def _awaited(value: Awaitable[T]) -> T:
    return await value


async def call_in_caller(fn: Callable[[], Any]) -> Any:
    """Call user code *fn*: in the blocking caller's thread when a blocking face is waiting
    on this coroutine, else here on the loop; an awaitable result is awaited."""
    inbox = _CALLER.get(None)
    if inbox is None:
        value = fn()
    else:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        inbox.put((fn, answer))
        value = await answer
    if inspect.isawaitable(value):
        value = await value
    return value


class Face(Generic[A]):
    """The blocking face of an asyncio object *inner*, run on *loop*."""

    def __init__(self, inner: A, loop: LoopThread) -> None:
        self._a = inner
        self._loop = loop


class _Derived(Generic[A, P, R]):
    """A method of a blocking face: calls the async method and adapts what it returns."""

    def __init__(
        self, method: Callable[Concatenate[A, P], Any], adapt: Callable[[Face[A], Any], R]
    ) -> None:
        self._method = method
        self._adapt = adapt
        self._name = method.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = f"{owner.__name__}.{name}"

    @overload
    def __get__(self, face: None, owner: type) -> Self: ...
    @overload
    def __get__(self, face: Face[A], owner: type) -> Callable[P, R]: ...
    def __get__(self, face: Face[A] | None, owner: type) -> Self | Callable[P, R]:
        if face is None:
            return self
        method, adapt = self._method, self._adapt

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                made = method(face._a, *args, **kwargs)
            except TypeError as exc:
                self._rename(exc, args, kwargs)
                raise
            return adapt(face, made)

        call.__name__ = self._name.rpartition(".")[2]
        call.__qualname__ = self._name
        call.__doc__ = method.__doc__
        return call

    def _rename(self, exc: TypeError, args: Any, kwargs: Any) -> None:
        """Raise *exc* again naming this blocking method if the arguments did not bind."""
        try:
            inspect.signature(self._method).bind(None, *args, **kwargs)
        except TypeError as bad:
            raise TypeError(f"{self._name}() {bad}") from None


def blocking(
    method: Callable[Concatenate[A, P], Coroutine[Any, Any, R]],
) -> _Derived[A, P, R]:
    """A blocking method that runs the async *method* to completion."""
    return _Derived(method, lambda face, coro: face._loop.run(coro))


def blocking_iter(
    method: Callable[Concatenate[A, P], AsyncIterator[T]],
) -> _Derived[A, P, Iterator[T]]:
    """A blocking method that iterates what the async-iterator *method* yields."""
    return _Derived(method, lambda face, stream: face._loop.iterate(stream))


def blocking_context(
    method: Callable[Concatenate[A, P], AbstractAsyncContextManager[T]],
) -> _Derived[A, P, AbstractContextManager[T]]:
    """A blocking method returning a ``with`` context over the async one *method* returns."""
    return _Derived(method, lambda face, cm: face._loop.context(cm))


def blocking_face(
    method: Callable[Concatenate[A, P], Awaitable[T]], face: Callable[[T, LoopThread], F]
) -> _Derived[A, P, F]:
    """A blocking method that awaits *method* and wraps the result in its blocking *face*."""
    return _Derived(method, lambda f, made: face(f._loop.run(_awaited(made)), f._loop))


def connected(
    connect: Callable[P, Coroutine[Any, Any, A]], face: Callable[[A, LoopThread], F]
) -> Callable[P, F]:
    """A blocking constructor: run the async *connect* on a new loop thread, then wrap it."""

    def call(*args: P.args, **kwargs: P.kwargs) -> F:
        loop = LoopThread()
        try:
            inner = loop.run(connect(*args, **kwargs))
        except BaseException:
            loop.stop()
            raise
        return face(inner, loop)

    call.__doc__ = connect.__doc__
    return call

"""Every error survives the wire codec with its class and typed attributes."""

import pickle
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from coordd import errors, rpc_status

CASES = [
    errors.InvalidArgumentError.single("ttl", "must be > 0"),
    errors.ClaimNotHeldError("ns", "r", "a", 3, datetime(2030, 1, 1, tzinfo=UTC)),
    errors.FencingTokenStaleError("ns", "r", 1, 2),
    errors.RevisionMismatchError("ns", "k", 0, 3),
    errors.IdempotencyKeyReusedError("ns", "k"),
    errors.IdempotencyInFlightError("ns", "k", timedelta(seconds=2), 1),
    errors.IdempotencyAttemptSupersededError("ns", "k", 4),
    errors.UnconditionalWriteForbiddenError("ns"),
    errors.PermissionDeniedError("write", "ns"),
    errors.RevisionCompactedError("ns", 5),
    errors.StorageUnavailableError(),
    errors.RevisionNotReachedError("ns", 9, 7, timedelta(milliseconds=250)),
    errors.InternalError("internal error; trace_id=ab", "ab"),
    errors.AgreementDecidedError("ns", "ag", "aborted", "rejected", "too risky", 7),
    errors.AgreementDecidedError("ns", "ag", "committed", "all_accepted", "", 9),
    errors.NotAParticipantError("ns", "ag", "agent-x", "reviewer"),
    errors.VoteAlreadyCastError("ns", "ag", True),
    errors.AgreementExistsError("ns", "ag"),
]


@pytest.mark.parametrize("err", CASES, ids=lambda e: type(e).__name__)
def test_round_trip(err: errors.CoorddError) -> None:
    status = rpc_status.to_status(err)
    assert status.code == err.code.value[0]
    back = rpc_status.from_status(status)
    assert type(back) is type(err)
    assert back.message == err.message
    public = {k: v for k, v in vars(err).items()}
    assert {k: getattr(back, k) for k in public} == public
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err) and vars(copy) == vars(err)


def test_status_without_coordd_error_info_falls_back_by_code() -> None:
    from google.rpc import status_pb2

    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="down")
    assert isinstance(rpc_status.from_status(status), errors.UnavailableError)
    status = status_pb2.Status(code=grpc.StatusCode.UNIMPLEMENTED.value[0], message="no")
    assert isinstance(rpc_status.from_status(status), errors.InternalError)


def test_reasons_are_unique_and_well_formed() -> None:
    import re

    seen = {}
    for cls in errors.CoorddError.__subclasses__():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+[A-Z0-9]", cls.reason) and len(cls.reason) <= 63
        assert cls.reason not in seen, f"{cls} reuses {cls.reason}"
        seen[cls.reason] = cls
        assert errors.error_class_for_reason(cls.reason) is cls


def test_declared_details_exist_and_match_the_constructors() -> None:
    """What an error declares is all the codec needs: its detail message exists and carries
    (directly or through ``renames``) every required constructor parameter."""
    import inspect

    for cls in errors.CoorddError.__subclasses__():
        if not cls.detail or cls is errors.InvalidArgumentError:
            continue
        message = rpc_status._MESSAGES[cls.detail]
        params = inspect.signature(cls.__init__).parameters
        fields = {cls.renames.get(f.name, f.name) for f in message.DESCRIPTOR.fields}
        required = {n for n, p in params.items() if n != "self" and p.default is p.empty}
        assert required <= fields | {"retry_after"}, (cls, required - fields)

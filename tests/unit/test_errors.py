"""A refusal's message and metadata are cut to fit a response's trailers, never mid-character."""

from __future__ import annotations

import grpc

from services.runtime.errors import MAX_MESSAGE_BYTES, MAX_METADATA_BYTES, ServiceError, to_status


def test_a_message_quoting_a_huge_value_is_cut_short_on_a_character_boundary() -> None:
    err = ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "BAD_BROKER", "unknown broker " + "é" * 5_000, broker="😀" * 500)
    assert len(err.message.encode()) <= MAX_MESSAGE_BYTES and err.message.startswith("unknown broker éé")
    assert err.message.endswith("…") and "\ufffd" not in err.message
    assert len(err.metadata["broker"].encode()) <= MAX_METADATA_BYTES and err.metadata["broker"].endswith("…")
    status = to_status(err)
    assert sum(len(k) + len(v) for k, v in status.trailing_metadata) < 8192 // 2


def test_a_short_message_is_kept_whole() -> None:
    err = ServiceError(grpc.StatusCode.NOT_FOUND, "NO_ORDER", "no order é-1", signal_id="é-1")
    assert (err.message, err.metadata) == ("no order é-1", {"signal_id": "é-1"})

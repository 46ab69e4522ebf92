from nija.common.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitSignalRequest(_message.Message):
    __slots__ = ("signal",)
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    signal: _common_pb2.TradeSignal
    def __init__(self, signal: _Optional[_Union[_common_pb2.TradeSignal, _Mapping]] = ...) -> None: ...

class SubmitSignalResponse(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: _common_pb2.ExecutionUpdate
    def __init__(self, update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ...) -> None: ...

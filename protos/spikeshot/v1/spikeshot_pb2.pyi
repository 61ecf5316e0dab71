from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Rounding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUNDING_UNSPECIFIED: _ClassVar[Rounding]
    ROUNDING_NEAREST: _ClassVar[Rounding]
    ROUNDING_STOCHASTIC: _ClassVar[Rounding]

class WeightGrid(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEIGHT_GRID_UNSPECIFIED: _ClassVar[WeightGrid]
    WEIGHT_GRID_GLOBAL: _ClassVar[WeightGrid]
    WEIGHT_GRID_PER_TENSOR: _ClassVar[WeightGrid]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_SESSION: _ClassVar[ExportFormat]
    EXPORT_FORMAT_NIR: _ClassVar[ExportFormat]

class FrameType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_TYPE_UNSPECIFIED: _ClassVar[FrameType]
    FRAME_TYPE_FLOAT32: _ClassVar[FrameType]
    FRAME_TYPE_UINT16: _ClassVar[FrameType]
ROUNDING_UNSPECIFIED: Rounding
ROUNDING_NEAREST: Rounding
ROUNDING_STOCHASTIC: Rounding
WEIGHT_GRID_UNSPECIFIED: WeightGrid
WEIGHT_GRID_GLOBAL: WeightGrid
WEIGHT_GRID_PER_TENSOR: WeightGrid
EXPORT_FORMAT_SESSION: ExportFormat
EXPORT_FORMAT_NIR: ExportFormat
FRAME_TYPE_UNSPECIFIED: FrameType
FRAME_TYPE_FLOAT32: FrameType
FRAME_TYPE_UINT16: FrameType

class Events(_message.Message):
    __slots__ = ("t", "x", "y", "p", "sensor_width", "sensor_height")
    T_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    P_FIELD_NUMBER: _ClassVar[int]
    SENSOR_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SENSOR_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    t: bytes
    x: bytes
    y: bytes
    p: bytes
    sensor_width: int
    sensor_height: int
    def __init__(self, t: _Optional[bytes] = ..., x: _Optional[bytes] = ..., y: _Optional[bytes] = ..., p: _Optional[bytes] = ..., sensor_width: _Optional[int] = ..., sensor_height: _Optional[int] = ...) -> None: ...

class Frames(_message.Message):
    __slots__ = ("bins", "height", "width", "type", "data")
    BINS_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    bins: int
    height: int
    width: int
    type: FrameType
    data: bytes
    def __init__(self, bins: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., type: _Optional[_Union[FrameType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_ms", "bin_ms", "queue_ms", "adapt_ms", "forward_ms", "total_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    BIN_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    ADAPT_MS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    bin_ms: float
    queue_ms: float
    adapt_ms: float
    forward_ms: float
    total_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., bin_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., adapt_ms: _Optional[float] = ..., forward_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class SessionSettings(_message.Message):
    __slots__ = ("model", "ways", "inner_steps", "step_size", "weight_bits", "rounding", "grid", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WAYS_FIELD_NUMBER: _ClassVar[int]
    INNER_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    ROUNDING_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    ways: int
    inner_steps: int
    step_size: float
    weight_bits: int
    rounding: Rounding
    grid: WeightGrid
    seed: int
    def __init__(self, model: _Optional[str] = ..., ways: _Optional[int] = ..., inner_steps: _Optional[int] = ..., step_size: _Optional[float] = ..., weight_bits: _Optional[int] = ..., rounding: _Optional[_Union[Rounding, str]] = ..., grid: _Optional[_Union[WeightGrid, str]] = ..., seed: _Optional[int] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "settings", "classes", "examples", "weights_version", "created_at", "last_used_at", "expires_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    settings: SessionSettings
    classes: _containers.RepeatedScalarFieldContainer[str]
    examples: int
    weights_version: int
    created_at: float
    last_used_at: float
    expires_at: float
    def __init__(self, session_id: _Optional[str] = ..., settings: _Optional[_Union[SessionSettings, _Mapping]] = ..., classes: _Optional[_Iterable[str]] = ..., examples: _Optional[int] = ..., weights_version: _Optional[int] = ..., created_at: _Optional[float] = ..., last_used_at: _Optional[float] = ..., expires_at: _Optional[float] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: SessionSettings
    def __init__(self, settings: _Optional[_Union[SessionSettings, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AdaptHeader(_message.Message):
    __slots__ = ("session_id", "replace_support")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REPLACE_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    replace_support: bool
    def __init__(self, session_id: _Optional[str] = ..., replace_support: _Optional[bool] = ...) -> None: ...

class ExampleChunk(_message.Message):
    __slots__ = ("label", "events", "frames", "end_of_example")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    END_OF_EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    label: str
    events: Events
    frames: Frames
    end_of_example: bool
    def __init__(self, label: _Optional[str] = ..., events: _Optional[_Union[Events, _Mapping]] = ..., frames: _Optional[_Union[Frames, _Mapping]] = ..., end_of_example: _Optional[bool] = ...) -> None: ...

class AdaptRequest(_message.Message):
    __slots__ = ("header", "example")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    header: AdaptHeader
    example: ExampleChunk
    def __init__(self, header: _Optional[_Union[AdaptHeader, _Mapping]] = ..., example: _Optional[_Union[ExampleChunk, _Mapping]] = ...) -> None: ...

class AdaptResponse(_message.Message):
    __slots__ = ("session_id", "loss_before", "loss_after", "support_accuracy", "examples", "new_examples", "classes", "weights_version", "steps", "timings")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LOSS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    LOSS_AFTER_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NEW_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    loss_before: float
    loss_after: float
    support_accuracy: float
    examples: int
    new_examples: int
    classes: _containers.RepeatedScalarFieldContainer[str]
    weights_version: int
    steps: int
    timings: Timings
    def __init__(self, session_id: _Optional[str] = ..., loss_before: _Optional[float] = ..., loss_after: _Optional[float] = ..., support_accuracy: _Optional[float] = ..., examples: _Optional[int] = ..., new_examples: _Optional[int] = ..., classes: _Optional[_Iterable[str]] = ..., weights_version: _Optional[int] = ..., steps: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ClassifyHeader(_message.Message):
    __slots__ = ("session_id", "candidates")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    candidates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., candidates: _Optional[_Iterable[str]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("header", "events", "frames")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    header: ClassifyHeader
    events: Events
    frames: Frames
    def __init__(self, header: _Optional[_Union[ClassifyHeader, _Mapping]] = ..., events: _Optional[_Union[Events, _Mapping]] = ..., frames: _Optional[_Union[Frames, _Mapping]] = ...) -> None: ...

class LabelProbability(_message.Message):
    __slots__ = ("label", "probability")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    label: str
    probability: float
    def __init__(self, label: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("label", "probabilities", "weights_version", "events", "timings")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    label: str
    probabilities: _containers.RepeatedCompositeFieldContainer[LabelProbability]
    weights_version: int
    events: int
    timings: Timings
    def __init__(self, label: _Optional[str] = ..., probabilities: _Optional[_Iterable[_Union[LabelProbability, _Mapping]]] = ..., weights_version: _Optional[int] = ..., events: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class StreamConfig(_message.Message):
    __slots__ = ("session_id", "window_us", "hop_us", "candidates")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_US_FIELD_NUMBER: _ClassVar[int]
    HOP_US_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    window_us: int
    hop_us: int
    candidates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., window_us: _Optional[int] = ..., hop_us: _Optional[int] = ..., candidates: _Optional[_Iterable[str]] = ...) -> None: ...

class ClassifyStreamRequest(_message.Message):
    __slots__ = ("config", "events")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    config: StreamConfig
    events: Events
    def __init__(self, config: _Optional[_Union[StreamConfig, _Mapping]] = ..., events: _Optional[_Union[Events, _Mapping]] = ...) -> None: ...

class ClassifyStreamResponse(_message.Message):
    __slots__ = ("window_start_us", "window_end_us", "label", "probabilities", "events", "complete", "weights_version", "timings")
    WINDOW_START_US_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_US_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    window_start_us: int
    window_end_us: int
    label: str
    probabilities: _containers.RepeatedCompositeFieldContainer[LabelProbability]
    events: int
    complete: bool
    weights_version: int
    timings: Timings
    def __init__(self, window_start_us: _Optional[int] = ..., window_end_us: _Optional[int] = ..., label: _Optional[str] = ..., probabilities: _Optional[_Iterable[_Union[LabelProbability, _Mapping]]] = ..., events: _Optional[int] = ..., complete: _Optional[bool] = ..., weights_version: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ExportSessionRequest(_message.Message):
    __slots__ = ("session_id", "format")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    format: ExportFormat
    def __init__(self, session_id: _Optional[str] = ..., format: _Optional[_Union[ExportFormat, str]] = ...) -> None: ...

class ExportSessionResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ImportSessionRequest(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "is_default", "card_json", "arch", "ways", "bins", "height", "width", "sensor_width", "sensor_height", "window_us", "inner_steps", "step_size", "weight_bits", "parameters", "fingerprint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    WAYS_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    SENSOR_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SENSOR_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_US_FIELD_NUMBER: _ClassVar[int]
    INNER_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    is_default: bool
    card_json: str
    arch: str
    ways: int
    bins: int
    height: int
    width: int
    sensor_width: int
    sensor_height: int
    window_us: int
    inner_steps: int
    step_size: float
    weight_bits: int
    parameters: int
    fingerprint: str
    def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., card_json: _Optional[str] = ..., arch: _Optional[str] = ..., ways: _Optional[int] = ..., bins: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., sensor_width: _Optional[int] = ..., sensor_height: _Optional[int] = ..., window_us: _Optional[int] = ..., inner_steps: _Optional[int] = ..., step_size: _Optional[float] = ..., weight_bits: _Optional[int] = ..., parameters: _Optional[int] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

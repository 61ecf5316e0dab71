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

class Head(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEAD_UNSPECIFIED: _ClassVar[Head]
    HEAD_META: _ClassVar[Head]
    HEAD_PROTOTYPE: _ClassVar[Head]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_SESSION: _ClassVar[ExportFormat]
    EXPORT_FORMAT_NIR: _ClassVar[ExportFormat]

class FrameType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_TYPE_UNSPECIFIED: _ClassVar[FrameType]
    FRAME_TYPE_FLOAT32: _ClassVar[FrameType]
    FRAME_TYPE_UINT16: _ClassVar[FrameType]

class EventEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_ENCODING_UNSPECIFIED: _ClassVar[EventEncoding]
    EVENT_ENCODING_COLUMNS: _ClassVar[EventEncoding]
    EVENT_ENCODING_PACKED: _ClassVar[EventEncoding]
ROUNDING_UNSPECIFIED: Rounding
ROUNDING_NEAREST: Rounding
ROUNDING_STOCHASTIC: Rounding
WEIGHT_GRID_UNSPECIFIED: WeightGrid
WEIGHT_GRID_GLOBAL: WeightGrid
WEIGHT_GRID_PER_TENSOR: WeightGrid
HEAD_UNSPECIFIED: Head
HEAD_META: Head
HEAD_PROTOTYPE: Head
EXPORT_FORMAT_SESSION: ExportFormat
EXPORT_FORMAT_NIR: ExportFormat
FRAME_TYPE_UNSPECIFIED: FrameType
FRAME_TYPE_FLOAT32: FrameType
FRAME_TYPE_UINT16: FrameType
EVENT_ENCODING_UNSPECIFIED: EventEncoding
EVENT_ENCODING_COLUMNS: EventEncoding
EVENT_ENCODING_PACKED: EventEncoding

class Events(_message.Message):
    __slots__ = ("t", "x", "y", "p", "sensor_width", "sensor_height", "t_origin", "dt", "xyp")
    T_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    P_FIELD_NUMBER: _ClassVar[int]
    SENSOR_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SENSOR_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    T_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DT_FIELD_NUMBER: _ClassVar[int]
    XYP_FIELD_NUMBER: _ClassVar[int]
    t: bytes
    x: bytes
    y: bytes
    p: bytes
    sensor_width: int
    sensor_height: int
    t_origin: int
    dt: bytes
    xyp: bytes
    def __init__(self, t: _Optional[bytes] = ..., x: _Optional[bytes] = ..., y: _Optional[bytes] = ..., p: _Optional[bytes] = ..., sensor_width: _Optional[int] = ..., sensor_height: _Optional[int] = ..., t_origin: _Optional[int] = ..., dt: _Optional[bytes] = ..., xyp: _Optional[bytes] = ...) -> None: ...

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
    __slots__ = ("model", "ways", "inner_steps", "step_size", "weight_bits", "rounding", "grid", "seed", "head")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WAYS_FIELD_NUMBER: _ClassVar[int]
    INNER_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    ROUNDING_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    model: str
    ways: int
    inner_steps: int
    step_size: float
    weight_bits: int
    rounding: Rounding
    grid: WeightGrid
    seed: int
    head: Head
    def __init__(self, model: _Optional[str] = ..., ways: _Optional[int] = ..., inner_steps: _Optional[int] = ..., step_size: _Optional[float] = ..., weight_bits: _Optional[int] = ..., rounding: _Optional[_Union[Rounding, str]] = ..., grid: _Optional[_Union[WeightGrid, str]] = ..., seed: _Optional[int] = ..., head: _Optional[_Union[Head, str]] = ...) -> None: ...

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
    __slots__ = ("name", "is_default", "card_json", "arch", "ways", "bins", "height", "width", "sensor_width", "sensor_height", "window_us", "inner_steps", "step_size", "weight_bits", "parameters", "fingerprint", "card")
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
    CARD_FIELD_NUMBER: _ClassVar[int]
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
    card: ModelCard
    def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., card_json: _Optional[str] = ..., arch: _Optional[str] = ..., ways: _Optional[int] = ..., bins: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., sensor_width: _Optional[int] = ..., sensor_height: _Optional[int] = ..., window_us: _Optional[int] = ..., inner_steps: _Optional[int] = ..., step_size: _Optional[float] = ..., weight_bits: _Optional[int] = ..., parameters: _Optional[int] = ..., fingerprint: _Optional[str] = ..., card: _Optional[_Union[ModelCard, _Mapping]] = ...) -> None: ...

class ModelCard(_message.Message):
    __slots__ = ("format", "name", "network", "geometry", "inner_loop", "quantization", "parameters", "fingerprint")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    INNER_LOOP_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    format: str
    name: str
    network: NetworkCard
    geometry: InputGeometry
    inner_loop: InnerLoop
    quantization: Quantization
    parameters: int
    fingerprint: str
    def __init__(self, format: _Optional[str] = ..., name: _Optional[str] = ..., network: _Optional[_Union[NetworkCard, _Mapping]] = ..., geometry: _Optional[_Union[InputGeometry, _Mapping]] = ..., inner_loop: _Optional[_Union[InnerLoop, _Mapping]] = ..., quantization: _Optional[_Union[Quantization, _Mapping]] = ..., parameters: _Optional[int] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class NetworkCard(_message.Message):
    __slots__ = ("arch", "ways", "bins", "input_height", "input_width", "burn_in", "channels", "kernel", "pool", "pool_kind", "alpha", "beta", "alpha_rp", "w_rp", "input_gain", "reset", "surrogate_slope", "input_clip", "zero_head")
    ARCH_FIELD_NUMBER: _ClassVar[int]
    WAYS_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    BURN_IN_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    POOL_KIND_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    ALPHA_RP_FIELD_NUMBER: _ClassVar[int]
    W_RP_FIELD_NUMBER: _ClassVar[int]
    INPUT_GAIN_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    SURROGATE_SLOPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_CLIP_FIELD_NUMBER: _ClassVar[int]
    ZERO_HEAD_FIELD_NUMBER: _ClassVar[int]
    arch: str
    ways: int
    bins: int
    input_height: int
    input_width: int
    burn_in: int
    channels: _containers.RepeatedScalarFieldContainer[int]
    kernel: int
    pool: int
    pool_kind: str
    alpha: float
    beta: float
    alpha_rp: float
    w_rp: float
    input_gain: float
    reset: str
    surrogate_slope: float
    input_clip: float
    zero_head: bool
    def __init__(self, arch: _Optional[str] = ..., ways: _Optional[int] = ..., bins: _Optional[int] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., burn_in: _Optional[int] = ..., channels: _Optional[_Iterable[int]] = ..., kernel: _Optional[int] = ..., pool: _Optional[int] = ..., pool_kind: _Optional[str] = ..., alpha: _Optional[float] = ..., beta: _Optional[float] = ..., alpha_rp: _Optional[float] = ..., w_rp: _Optional[float] = ..., input_gain: _Optional[float] = ..., reset: _Optional[str] = ..., surrogate_slope: _Optional[float] = ..., input_clip: _Optional[float] = ..., zero_head: _Optional[bool] = ...) -> None: ...

class InputGeometry(_message.Message):
    __slots__ = ("sensor_width", "sensor_height", "crop", "downsample", "bins", "window_us", "bin_us", "height", "width")
    SENSOR_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SENSOR_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    DOWNSAMPLE_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_US_FIELD_NUMBER: _ClassVar[int]
    BIN_US_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    sensor_width: int
    sensor_height: int
    crop: Crop
    downsample: int
    bins: int
    window_us: int
    bin_us: int
    height: int
    width: int
    def __init__(self, sensor_width: _Optional[int] = ..., sensor_height: _Optional[int] = ..., crop: _Optional[_Union[Crop, _Mapping]] = ..., downsample: _Optional[int] = ..., bins: _Optional[int] = ..., window_us: _Optional[int] = ..., bin_us: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class Crop(_message.Message):
    __slots__ = ("x0", "y0", "width", "height")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x0: int
    y0: int
    width: int
    height: int
    def __init__(self, x0: _Optional[int] = ..., y0: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class InnerLoop(_message.Message):
    __slots__ = ("steps", "step_size", "learned_step_sizes", "head")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNED_STEP_SIZES_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    steps: int
    step_size: float
    learned_step_sizes: _containers.RepeatedScalarFieldContainer[str]
    head: Head
    def __init__(self, steps: _Optional[int] = ..., step_size: _Optional[float] = ..., learned_step_sizes: _Optional[_Iterable[str]] = ..., head: _Optional[_Union[Head, str]] = ...) -> None: ...

class Quantization(_message.Message):
    __slots__ = ("bits", "grid", "rounding", "frac_bits")
    BITS_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    ROUNDING_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    bits: int
    grid: WeightGrid
    rounding: Rounding
    frac_bits: int
    def __init__(self, bits: _Optional[int] = ..., grid: _Optional[_Union[WeightGrid, str]] = ..., rounding: _Optional[_Union[Rounding, str]] = ..., frac_bits: _Optional[int] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_message_bytes", "max_events", "max_support_examples", "max_inner_steps", "max_sessions_per_owner", "max_sessions", "session_ttl_s", "max_text_chars", "max_window_us", "max_timestamp_us", "max_sensor_size", "max_queued_jobs", "max_concurrent_calls")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SUPPORT_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_INNER_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_PER_OWNER_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    SESSION_TTL_S_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_WINDOW_US_FIELD_NUMBER: _ClassVar[int]
    MAX_TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    MAX_SENSOR_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_CALLS_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_events: int
    max_support_examples: int
    max_inner_steps: int
    max_sessions_per_owner: int
    max_sessions: int
    session_ttl_s: float
    max_text_chars: int
    max_window_us: int
    max_timestamp_us: int
    max_sensor_size: int
    max_queued_jobs: int
    max_concurrent_calls: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_events: _Optional[int] = ..., max_support_examples: _Optional[int] = ..., max_inner_steps: _Optional[int] = ..., max_sessions_per_owner: _Optional[int] = ..., max_sessions: _Optional[int] = ..., session_ttl_s: _Optional[float] = ..., max_text_chars: _Optional[int] = ..., max_window_us: _Optional[int] = ..., max_timestamp_us: _Optional[int] = ..., max_sensor_size: _Optional[int] = ..., max_queued_jobs: _Optional[int] = ..., max_concurrent_calls: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "limits", "event_encodings")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    limits: ServerLimits
    event_encodings: _containers.RepeatedScalarFieldContainer[EventEncoding]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ..., event_encodings: _Optional[_Iterable[_Union[EventEncoding, str]]] = ...) -> None: ...

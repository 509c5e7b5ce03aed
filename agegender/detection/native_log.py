"""Quiet MediaPipe's native loggers by their own severity switches, so that stderr holds only our messages.

MediaPipe ≥ 1.0 runs BlazeFace in LiteRT, whose logger prints every INFO and WARNING straight to file descriptor 2:
46 "Sparsity tensors may not yet be fully supported" lines per model load, "RegisterAccelerator" on load and
"DestroyAccelerator" on every close (the last line of every CLI run). TFLite's minimal logger adds "Created
TensorFlow Lite XNNPACK delegate", and MediaPipe's absl log a "memory is not aligned" WARNING. None of them reads an environment variable (``GLOG_minloglevel`` and
``TF_CPP_MIN_LOG_LEVEL`` only reach absl/glog), and MediaPipe's wheel does not export LiteRT's
``LiteRtSetMinLoggerSeverity``. The library does keep its symbol table, so we look the switches up there
(``LiteRtGetDefaultLogger``/``LiteRtSetMinLoggerSeverity``, TFLite's ``MinimalLogger::minimum_log_severity_``,
``absl::SetMinLogLevel``) and set all three to ERROR: errors still reach stderr, nothing is redirected or closed.

Best effort by design: a MediaPipe build without these symbols simply stays verbose (``quiet_native_logs``
returns False), and ``AGEGENDER_VERBOSE=1`` leaves the native logs as they are.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_ERROR = 3
"""ERROR in both LiteRtLogSeverity and tflite::LogSeverity (VERBOSE/DEBUG, INFO = 1, WARNING = 2, ERROR = 3)."""

_ANCHOR = "MpFaceDetectorCreate"  # an exported function: its address minus its symbol value is the load base
_LITERT_GET_LOGGER = "LiteRtGetDefaultLogger"
_LITERT_SET_SEVERITY = "LiteRtSetMinLoggerSeverity"
_TFLITE_SEVERITY = "_ZN6tflite16logging_internal13MinimalLogger21minimum_log_severity_E"
_ABSL_SET_MIN_LEVEL = "_ZN4absl14SetMinLogLevelENS_18LogSeverityAtLeastE"  # absl::SetMinLogLevel(LogSeverityAtLeast)
_ABSL_ERROR = 2
"""absl::LogSeverityAtLeast::kError (kInfo = 0, kWarning = 1)."""

_ELF64_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("section", "<u2"), ("value", "<u8"),
                       ("size", "<u8")])

_lock = threading.Lock()
_done: bool | None = None


def _symbol_values(path: Path, wanted: set[str]) -> dict[str, int]:
    """Values (offsets from the load base) of ``wanted`` symbols in an ELF64 little-endian file's ``.symtab``."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return {}
        (shoff,) = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
        symtab = next((s for s in sections if s[1] == 2), None)  # SHT_SYMTAB: absent in a stripped build
        if symtab is None:
            return {}
        strtab = sections[symtab[6]]
        f.seek(strtab[4])
        names = f.read(strtab[5])
        f.seek(symtab[4])
        symbols = f.read(symtab[5])
    # Each wanted name's offset in the string table, then the symbols that point there (numpy: ~10^5 symbols).
    offsets = {}
    for name in wanted:
        at = names.find(b"\0" + name.encode() + b"\0")
        if at >= 0:
            offsets[at + 1] = name
    entries = np.frombuffer(symbols, dtype=_ELF64_SYM)
    found: dict[str, int] = {}
    for at, name in offsets.items():
        values = entries["value"][(entries["name"] == at) & (entries["value"] != 0)]
        if len(values):
            found[name] = int(values[0])
    return found


def _library_path() -> Path | None:
    try:
        import mediapipe
    except ImportError:
        return None
    path = Path(mediapipe.__file__).parent / "tasks" / "c" / "libmediapipe.so"
    return path if path.is_file() else None


def quiet_native_logs() -> bool:
    """Set LiteRT's, TFLite's and absl's minimum log severity to ERROR, once per process; True if all were set.

    Call it before the first MediaPipe task is made (:mod:`agegender.detection.blazeface` does)."""
    global _done
    with _lock:
        if _done is None:
            _done = os.environ.get("AGEGENDER_VERBOSE") != "1" and _set_severities()
        return _done


def _set_severities() -> bool:
    path = _library_path()
    if path is None:
        return False
    try:
        wanted = {_ANCHOR, _LITERT_GET_LOGGER, _LITERT_SET_SEVERITY, _TFLITE_SEVERITY, _ABSL_SET_MIN_LEVEL}
        values = _symbol_values(path, wanted)
        if len(values) < len(wanted):
            log.debug("MediaPipe's native log switches not found in %s; its logs stay on", path)
            return False
        library = ctypes.CDLL(str(path))  # the copy MediaPipe loaded: same path, same handle
        base = ctypes.cast(getattr(library, _ANCHOR), ctypes.c_void_p).value - values[_ANCHOR]
        get_logger = ctypes.CFUNCTYPE(ctypes.c_void_p)(base + values[_LITERT_GET_LOGGER])
        set_severity = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)(base + values[_LITERT_SET_SEVERITY])
        logger = get_logger()
        if not logger or set_severity(logger, _ERROR) != 0:
            return False
        ctypes.c_int.from_address(base + values[_TFLITE_SEVERITY]).value = _ERROR
        ctypes.CFUNCTYPE(None, ctypes.c_int)(base + values[_ABSL_SET_MIN_LEVEL])(_ABSL_ERROR)
        return True
    except (OSError, AttributeError, ValueError, struct.error) as exc:
        log.debug("could not quiet MediaPipe's native logs: %s", exc)
        return False

"""Step 2, faces: :class:`FaceDetector` (:mod:`.detector`: the passes over one image and their merge) runs
MediaPipe's BlazeFace tasks (:mod:`.blazeface`, with its native logs quieted by :mod:`.native_log`); detections,
overlaps and NMS are :mod:`.boxes`."""

from agegender.detection.boxes import KEYPOINT_NAMES, Detection
from agegender.detection.detector import DETECTOR_MODES, DetectorMode, FaceDetector

__all__ = ["DETECTOR_MODES", "Detection", "DetectorMode", "FaceDetector", "KEYPOINT_NAMES"]

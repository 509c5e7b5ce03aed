"""Video: every face followed through a clip (:mod:`.analysis`, :func:`analyse_video`) by the tracker that the live
camera page shares (:mod:`.tracking`). Decoding and encoding are :mod:`agegender.io.video`."""

from agegender.video.analysis import (InvalidVideoError, TrackSummary, VIDEO_SUFFIXES, VideoInfo, VideoLimits,
                                      VideoResult, VideoTooLargeError, analyse_video, probe_video)

__all__ = ["InvalidVideoError", "TrackSummary", "VIDEO_SUFFIXES", "VideoInfo", "VideoLimits", "VideoResult",
           "VideoTooLargeError", "analyse_video", "probe_video"]

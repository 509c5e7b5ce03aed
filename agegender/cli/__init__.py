"""The ``agegender`` command: :mod:`.parser` builds the parser and dispatches (:func:`main`); one module per command
(:mod:`.predict`, :mod:`.video` for video files, :mod:`.info`, :mod:`.check`, :mod:`.batch`; ``evaluate`` lives in
:mod:`agegender.evaluation.cli`), and the options they share in :mod:`.options`."""

from agegender.cli.parser import main

__all__ = ["main"]

"""The Streamlit side of agegender, split by concern; the pages in ``pages/`` stay thin and call these modules.

Nothing here holds model logic: every module calls the ``agegender`` library and only decides what is shown and
how. ``agegender/`` never imports Streamlit; these modules do. Uploaded images live in memory
(``st.session_state``, downscaled) and are never written to disk.

* :mod:`app.settings`: page setup, the sidebar settings shared by every page, the page list, the privacy line.
* :mod:`app.estimator_cache`: one cached :class:`agegender.Estimator` per setting, shared by all sessions.
* :mod:`app.analysis`: one uploaded file → an :class:`app.analysis.ImageResult` (limits, per-session cache).
* :mod:`app.upload`: the upload page's flow (inputs or a sample, one file at a time, the batch's footer).
* :mod:`app.cards`, :mod:`app.charts`, :mod:`app.summary`: what a result looks like on the page.
* :mod:`app.exports`: CSV / JSON / zip downloads in the schema of :mod:`agegender.results` (as the CLI).
* :mod:`app.samples`: example pictures built at runtime from scikit-image's astronaut.
* :mod:`app.report_data`, :mod:`app.report_charts`: the model report page's data and charts.
* :mod:`app.live`, :mod:`app.live_view`: the live camera's frame callback (worker thread) and its panel.
* :mod:`app.video`: the video-file page's flow (upload, analyse with progress, downloads, track table).
"""

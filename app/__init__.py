"""The Streamlit side of agegender: helpers of the pages in ``pages/`` (no model logic; that is ``agegender``)."""

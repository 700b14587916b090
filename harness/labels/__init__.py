"""Human labels of replies: the store that remembers them (``store``), which label is in force when several
people labelled one reply (``records``), the rubric they label by (``rubric``), agreement between labellers
(``agreement``), CSV/Parquet export and import (``transfer``), and the review page that collects them
(``review_session``, ``review_server``, ``static/``). At the data layer: it imports ``harness.core`` only; the
review server receives the verification design's functions from its caller."""

from harness.labels.records import ADJUDICATION, LabelRecord
from harness.labels.rubric import RUBRIC, RUBRIC_VERSION
from harness.labels.store import FILE_NAME, LabelStore, default_labeller, store_path

__all__ = ["ADJUDICATION", "FILE_NAME", "RUBRIC", "RUBRIC_VERSION", "LabelRecord", "LabelStore", "default_labeller",
           "store_path"]

"""Preprocessing: the Beam pipeline from a catalog to log-mel TFRecords, the Beam jobs' shared steps, Spotify and MTAT.

How a track is taken in (catalog, audio, checks, rejections) is `intake`'s.

Importing Apache Beam without its GCP extra logs "apitools not found, and
bigquery client libraries are not available ..." on the root logger: noise
for anyone not using BigQuery, which newcomers read as a failure. The filter
below drops that one message (and nothing else) before Beam is imported by
this package or by `serving`, which imports it first.
"""

import logging


class _BeamGcpExtraNotice(logging.Filter):
    """Drops Beam's import-time notice that its optional GCP clients are missing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("apitools not found, and bigquery client libraries")


logging.getLogger().addFilter(_BeamGcpExtraNotice())

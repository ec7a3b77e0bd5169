"""A catalog from the Spotify Web API: metadata, preview audio and tags.

`python -m data_prep.spotify` collects tracks (playlists, a search, a list
of ids) with spotipy, downloads their 30 s previews (or takes local files),
derives tags from audio features and artist genres on the training split,
and writes a catalog for `python -m data_prep`. See `build` for the outputs,
`client` for credentials and retries, `labels` for the tags, and
docs/spotify.md for a walk-through.
"""

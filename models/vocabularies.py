"""The tag vocabularies of published checkpoints, in their output order."""

from __future__ import annotations

# MagnaTagATune's top 50 (the reference's `dataset/tags.npy` of
# minzwon/sota-music-tagging-models, the output order of its checkpoints, and
# musicnn's `MTT_LABELS`), spelled as the columns of annotations_final.csv,
# which `data_prep.mtat` uses.
MTAT_TOP50_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop",
    "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
    "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip

# The Million Song Dataset's top 50 Last.fm tags (musicnn's `MSD_LABELS`).
MSD_TOP50_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening",
    "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad",
    "House", "happy",
)  # fmt: skip

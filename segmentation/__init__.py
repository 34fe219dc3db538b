"""Per-cell instance masks of HPA image sets (``hpacell segment``).

Reads image sets and writes the mask contract (``<ID>_cellmask.png`` /
``<ID>_nucleimask.png``, uint16 PNG, 0 = background) through :mod:`.io`;
backends (builtin, hpacellseg) in :mod:`.backends`; the resumable batch job in
:mod:`.batch`; agreement with reference masks in :mod:`.matching`.
"""

from hpacell.utils.lazy import lazy_exports

_EXPORTS = {
    "CHANNELS": ".io",
    "ImageSetError": ".io",
    "find_image_sets": ".io",
    "read_image_set": ".io",
    "read_channel": ".io",
    "read_mask": ".io",
    "write_mask": ".io",
    "mask_paths": ".io",
    "write_png": ".io",
    "BACKENDS": ".backends",
    "Backend": ".backends",
    "get_backend": ".backends",
    "segment_folder": ".batch",
    "read_id_list": "hpacell.utils.tables",
    "read_status_table": ".batch",
    "segmentation_scores": ".matching",
    "match_instances": ".matching",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
